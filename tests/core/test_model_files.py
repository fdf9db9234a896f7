"""What a base model is, read from its files without torch: its architecture and its UNet's size."""

import json
import struct

from lora_studio.core import model_files
from lora_studio.core.config import Config
from lora_studio.core.resources import resource


def test_kind_is_read_from_the_model_when_auto(tmp_path):
    cfg = Config().replace(model={"kind": "auto", "base": str(resource("models", "sdxl"))})
    assert model_files.guess_kind(cfg) == "sdxl"
    cfg = Config().replace(model={"kind": "auto", "base": str(resource("models", "sd2"))})
    assert model_files.guess_kind(cfg) == "sd2"
    header = json.dumps({"conditioner.embedders.1.model.ln_final.weight": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    assert model_files.guess_kind(Config().replace(model={"kind": "auto", "base": str(f)})) == "sdxl"
    # Nothing to read: the resolution decides.
    assert model_files.guess_kind(Config().replace(model={"kind": "auto", "base": ""}, train={"resolution": 1024})) == "sdxl"
    assert model_files.guess_kind(Config().replace(model={"kind": "auto", "base": ""}, train={"resolution": 512})) == "sd1"


def _safetensors(path, tensors: dict[str, list[int]]) -> None:
    offset, header = 0, {}
    for name, shape in tensors.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


def test_the_unet_size_is_read_from_a_diffusers_folder_or_a_single_file(tmp_path):
    folder = tmp_path / "model"
    (folder / "model_index.json").parent.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text("{}")
    _safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors", {"conv_in.weight": [320, 4, 3, 3], "conv_in.bias": [320]})
    cfg = Config().replace(model={"base": str(folder)})
    assert model_files.unet_parameters(cfg) == 320 * 4 * 9 + 320

    single = tmp_path / "one.safetensors"
    _safetensors(single, {"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
                          "first_stage_model.encoder.conv_in.weight": [128, 3, 3, 3]})  # the VAE does not count
    assert model_files.unet_parameters(Config().replace(model={"base": str(single)})) == 320 * 4 * 9
    assert model_files.unet_parameters(Config().replace(model={"base": str(tmp_path / "missing.ckpt")})) is None


def test_a_small_test_model_gets_no_estimate_and_a_standard_one_does(tmp_path):
    tiny = tmp_path / "one.safetensors"
    _safetensors(tiny, {"model.diffusion_model.input_blocks.0.0.weight": [32, 4, 3, 3]})
    note = model_files.nonstandard_size(Config().replace(model={"base": str(tiny), "kind": "sd1"}))
    assert note is not None and "this base model is under 1 % of the size of a standard SD1.x model" in note and "UNet" not in note
    assert note.endswith("it needs less memory")
    # The shipped configs hold no weights: nothing to count, so the estimate stands.
    assert model_files.nonstandard_size(Config().replace(model={"base": str(resource("models", "sd1"))})) is None


def test_a_damaged_model_is_named_when_it_is_picked(tmp_path):
    single = tmp_path / "sd15.safetensors"
    _safetensors(single, {"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3]})
    assert model_files.damaged_model(single) is None
    single.write_bytes(single.read_bytes()[:-100])  # a download cut short
    note = model_files.damaged_model(single)
    assert note.startswith("is damaged and cannot be read (sd15.safetensors: it is 100 bytes shorter than its header says")
    assert note.endswith("download the model again.")
    assert model_files.unet_parameters(Config().replace(model={"base": str(single)})) is None  # no count from a damaged file

    folder = tmp_path / "diffusers"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    _safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors", {"conv_in.weight": [320, 4, 3, 3]})
    _safetensors(folder / "text_encoder" / "model.safetensors", {"w": [8, 8]})
    assert model_files.damaged_model(folder) is None
    lora = folder / "text_encoder" / "model.safetensors"
    raw = bytearray(lora.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    lora.write_bytes(bytes(raw[: 8 + n]) + bytes(raw[8 + n:]) + b"\0" * 3)
    assert "(text_encoder/model.safetensors: the file has 3 bytes after its last tensor)" in model_files.damaged_model(folder)
    problems = model_files.model_problems(Config().replace(model={"base": str(folder), "vae": str(single)}))
    assert [p.key for p in problems] == ["model.base", "model.vae"]
    assert model_files.model_problems(Config()) == [] and model_files.damaged_model(tmp_path / "missing") is None


def test_a_lora_as_base_model_and_a_moved_base_model_are_named_when_picked(tmp_path):
    import json
    import struct

    from lora_studio.core.config import Config

    def write(path, names):
        header = {n: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, n in enumerate(names)}
        data = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(data)) + data + b"\0" * (4 * len(names)))
        return path

    lora = write(tmp_path / "style.safetensors", ["lora_unet_a.lora_down.weight", "lora_unet_a.lora_up.weight", "lora_unet_a.alpha"])
    base = write(tmp_path / "base.safetensors", ["model.diffusion_model.input_blocks.0.0.weight"])
    assert model_files.is_lora_file(lora) and not model_files.is_lora_file(base)
    (p,) = model_files.model_problems(Config().replace(model={"base": str(lora)}))
    assert p.key == "model.base" and "is a LoRA, not a base model" in p.message
    (p,) = model_files.model_problems(Config().replace(model={"base": str(tmp_path / "gone.safetensors")}))
    assert "is not there any more" in p.message
    assert model_files.model_problems(Config().replace(model={"base": str(base)})) == []
