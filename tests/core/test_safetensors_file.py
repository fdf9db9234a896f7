"""A safetensors header is checked against its file: every tensor inside it, each the size its shape and
dtype need, back to back. What the safetensors library refuses to open is refused here, in words."""

import json
import struct

import pytest

from lora_studio.core.safetensors_file import DamagedFile, read_header


def write(path, header: dict, data: bytes, *, length: int | None = None) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)


def good(path):
    header = {"__metadata__": {"format": "pt"},
              "a.weight": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},
              "b.alpha": {"dtype": "F32", "shape": [], "data_offsets": [12, 16]},
              "c.empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [16, 16]}}
    write(path, header, b"\0" * 16)
    return header


def test_a_whole_file_reads(tmp_path):
    header = good(tmp_path / "ok.safetensors")
    assert read_header(tmp_path / "ok.safetensors") == header


def test_a_file_written_by_safetensors_reads(tmp_path):
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros((3, 5), dtype=np.float16), "y": np.ones(7, dtype=np.int64)}, str(tmp_path / "st.safetensors"))
    assert set(read_header(tmp_path / "st.safetensors")) == {"x", "y"}


@pytest.mark.parametrize("damage, words", [
    ("truncated", "it is 10 bytes shorter than its header says (the file is incomplete)"),
    ("offsets past the end", "it is 1,099,511,627,760 bytes shorter than its header says"),
    ("shape overflows", "tensor a.weight's shape [1099511627776, 1099511627776] does not match its 12 bytes of F16 data"),
    ("negative size", "the header's entry for tensor a.weight is not a data type, a shape and two offsets"),
    ("unknown dtype", "tensor a.weight has the unknown data type F17"),
    ("gap", "tensor b.alpha's data leaves a gap before it"),
    ("overlap", "tensor b.alpha's data overlaps another"),
    ("trailing bytes", "the file has 5 bytes after its last tensor"),
    ("header length lies", "its header length is not plausible"),
    ("header not json", "its header is not valid JSON"),
    ("header a list", "its header is not a table of tensors"),
    ("too short", "it is too short to be a safetensors file"),
])
def test_a_damaged_file_says_why(tmp_path, damage, words):
    f = tmp_path / "bad.safetensors"
    header = good(f)
    data = b"\0" * 16
    a, b = header["a.weight"], header["b.alpha"]
    if damage == "truncated":
        f.write_bytes(f.read_bytes()[:-10])
    elif damage == "offsets past the end":
        a["data_offsets"] = [0, 1 << 40]
        write(f, header, data)
    elif damage == "shape overflows":
        a["shape"] = [1 << 40, 1 << 40]
        write(f, header, data)
    elif damage == "negative size":
        a["shape"] = [-2, -3]
        write(f, header, data)
    elif damage == "unknown dtype":
        a["dtype"] = "F17"
        write(f, header, data)
    elif damage == "gap":
        b["data_offsets"] = [13, 17]
        write(f, header, data + b"\0")
        header["c.empty"]["data_offsets"] = [17, 17]
        write(f, header, data + b"\0")
    elif damage == "overlap":
        b["data_offsets"] = [10, 14]
        header["c.empty"]["data_offsets"] = [14, 14]
        write(f, header, data[:14])
    elif damage == "trailing bytes":
        write(f, header, data + b"extra")
    elif damage == "header length lies":
        write(f, header, data, length=10_000)
    elif damage == "header not json":
        f.write_bytes(struct.pack("<Q", 4) + b"{{{{" + data)
    elif damage == "header a list":
        write(f, [1, 2], b"")
    elif damage == "too short":
        f.write_bytes(b"\x01\x02")
    with pytest.raises(DamagedFile) as e:
        read_header(f)
    assert words in e.value.reason
