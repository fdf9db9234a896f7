"""The header of a .safetensors file, read and checked against the file without loading a tensor.

The format is 8 bytes of header length, the header (JSON: name -> dtype, shape, data_offsets, plus an
optional `__metadata__`), then the tensors' bytes back to back. A header alone can look fine for a file
that cannot load: a truncated download whose offsets point past its end, a shape whose size does not
match its bytes. The checks are the ones the safetensors library makes when it opens a file (its
`validate`), so a file that passes here opens there, and one that fails says why in words before
anything is loaded. Pure Python: the app's model picker uses it without torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
# Bits per element of each safetensors dtype (the sub-byte float formats pack several per byte).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


class DamagedFile(ValueError):
    """The file is not a readable safetensors file; `reason` says why, in words that follow "because"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def read_header(path: str | Path) -> dict[str, Any]:
    """The header (with `__metadata__` when there is one) of a file whose every tensor lies within it and
    fills exactly the bytes its dtype and shape need. DamagedFile otherwise; OSError if it cannot be read."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise DamagedFile("it is too short to be a safetensors file")
        n = int.from_bytes(raw, "little")
        if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
            raise DamagedFile("its header length is not plausible (it is not a safetensors file, or it is cut short)")
        text = f.read(n)
    try:
        header = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise DamagedFile("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise DamagedFile("its header is not a table of tensors")
    check_layout(header, size - 8 - n)
    return header


def _entry(name: str, info: Any) -> tuple[str, list[int], int, int]:
    if isinstance(info, dict):
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if (isinstance(dtype, str) and isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*shape, *offsets])
                and offsets[0] <= offsets[1]):
            return dtype, shape, offsets[0], offsets[1]
    raise DamagedFile(f"the header's entry for tensor {name} is not a data type, a shape and two offsets")


def check_layout(header: dict[str, Any], data_bytes: int) -> None:
    """DamagedFile unless the tensors of `header` tile the `data_bytes` after it exactly, each the size
    its dtype and shape need."""
    entries = [(name, *_entry(name, info)) for name, info in header.items() if name != "__metadata__"]
    needed_bytes = max((end for *_, end in entries), default=0)
    if needed_bytes > data_bytes:
        raise DamagedFile(f"it is {needed_bytes - data_bytes:,} bytes shorter than its header says (the file is incomplete)")
    spans = []
    for name, dtype, shape, begin, end in entries:
        bits = DTYPE_BITS.get(dtype)
        if bits is None:
            raise DamagedFile(f"tensor {name} has the unknown data type {dtype}")
        needed = math.prod(shape) * bits
        if needed % 8 or needed // 8 != end - begin:
            raise DamagedFile(f"tensor {name}'s shape {shape} does not match its {end - begin:,} bytes of {dtype} data")
        spans.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            raise DamagedFile(f"tensor {name}'s data {'overlaps another' if begin < at else 'leaves a gap before it'}")
        at = end
    if at != data_bytes:
        raise DamagedFile(f"the file has {data_bytes - at:,} bytes after its last tensor")
