"""`inspect` reads our files, other tools' files (peft, LyCORIS) and files without metadata."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lora_studio.core.config import Config
from lora_studio.core.errors import UserError
from lora_studio.engine.export.export import write_kohya
from lora_studio.engine.export.inspect_lora import format_info, inspect_command, inspect_file
from lora_studio.engine.models import tiny

R = 4
STATE = {
    "step": 300, "epoch": 3, "model_kind": "sd1", "prediction": "epsilon", "base_model": "/models/base", "base_name": "base",
    "rank": R, "alpha": 2.0, "resolution": 64, "num_epochs": 3, "training_started_at": 1_700_000_000.0,
    "tag_frequency": {"/home/ada/data/10_ink": {"ink": 9, "wash": 4, "cat": 2}, "/home/ada/data/5_more": {"ink": 1, **{f"t{i}": 3 for i in range(12)}}},
}


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    base = tiny.save_diffusers(root / "base", "sd1")
    te = tiny.build("sd1")["text_encoder"]
    unet = tiny.build("sd1")["unet"]
    lora = {}
    for part, model in (("unet", unet), ("te1", te)):
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and name.endswith(("attn2.to_k", "attn2.to_v", "q_proj")):
                name = name if part == "unet" else "text_model." + name.removeprefix("text_model.")
                lora[f"{part}.{name}.lora_A.weight"] = torch.randn(R, m.in_features)
                lora[f"{part}.{name}.lora_B.weight"] = torch.randn(m.out_features, R)
    cfg = Config()
    cfg.output.name, cfg.output.trigger, cfg.output.author = "ink_style", "inkstyle, ink wash", "Ada"
    return base, write_kohya(lora, STATE, cfg, root / "ink_style.safetensors", preview_src=None)


def test_inspects_our_export(ours, capsys):
    base, path = ours
    info = inspect_file(path)
    assert (info["format"], info["architecture"], info["architecture_source"]) == ("kohya", "sd1", "metadata")
    assert info["ranks"] == [R] and info["alphas"] == [2.0] and info["dtypes"] == ["F16"]
    assert info["modules"] == {"UNet": 8, "TE": 2} and info["module_count"] == 10
    md = info["metadata"]
    assert (md["name"], md["steps"], md["epochs"], md["resolution"], md["base_model"]) == ("ink_style", "300", "3", "64x64", "base")
    assert md["started"] == "2023-11-14 22:13 UTC"
    assert info["trigger_words"] == ["inkstyle", "ink wash"]
    # Tags summed over the dataset folders, the ten most frequent.
    assert info["top_tags"][:2] == [("ink", 10), ("wash", 4)] and len(info["top_tags"]) == 10
    assert "verification" not in info

    checked = inspect_file(path, base=base)["verification"]
    assert checked["verified"] and checked["problems"] == []
    assert inspect_command(path, base=base) == 0
    out = capsys.readouterr().out
    assert "Stable Diffusion 1.x" in out and "trigger words: inkstyle, ink wash" in out and "verified against" in out
    assert inspect_command(path, base=None, as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["modules"] == {"UNet": 8, "TE": 2}


def test_verification_failure_is_reported(ours, tmp_path, capsys):
    base, _ = ours
    bad = tmp_path / "bad.safetensors"
    save_file({"lora_unet_nowhere.lora_down.weight": torch.zeros(R, 8), "lora_unet_nowhere.lora_up.weight": torch.zeros(8, R)}, str(bad))
    assert inspect_command(bad, base=base) == 1
    out = capsys.readouterr().out
    assert "NOT verified" in out and "lora_unet_nowhere maps to no module" in out and "has no alpha" in out


def test_inspects_a_peft_file_guessing_sdxl_from_the_cross_attention_width(tmp_path):
    t = {}
    for i, width in enumerate((640, 1280)):
        p = f"unet.down_blocks.{i + 1}.attentions.0.transformer_blocks.0.attn2"
        t[f"{p}.to_k.lora_A.weight"] = torch.zeros(8, 2048)  # SDXL's text embedding is 2048 wide
        t[f"{p}.to_k.lora_B.weight"] = torch.zeros(width, 8)
    t["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(8, 768)
    t["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.zeros(768, 8)
    t["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(8, 1280)
    t["text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.zeros(1280, 8)
    save_file(t, str(tmp_path / "peft.safetensors"), {"lora_adapter_metadata": json.dumps({"r": 8, "lora_alpha": 4})})
    info = inspect_file(tmp_path / "peft.safetensors")
    assert (info["format"], info["architecture"], info["architecture_source"]) == ("peft/diffusers", "sdxl", "key names and widths")
    assert info["modules"] == {"UNet": 2, "TE1": 1, "TE2": 1} and info["ranks"] == [8] and info["alphas"] == [4.0]
    assert "Stable Diffusion XL" in format_info(info)


def test_inspects_a_file_without_metadata_and_with_lycoris_keys(tmp_path):
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2"
    t = {
        f"{k}_to_k.lora_down.weight": torch.zeros(16, 1024),  # SD2's OpenCLIP-H is 1024 wide
        f"{k}_to_k.lora_up.weight": torch.zeros(320, 16),
        f"{k}_to_k.alpha": torch.tensor(8.0),
        f"{k}_to_v.hada_w1_a": torch.zeros(320, 4),
        f"{k}_to_v.hada_w1_b": torch.zeros(4, 1024),
        f"{k}_to_v.alpha": torch.tensor(1.0),
    }
    save_file(t, str(tmp_path / "locon.safetensors"))
    info = inspect_file(tmp_path / "locon.safetensors")
    assert not info["has_metadata"] and info["metadata"]["name"] is None
    assert info["architecture"] == "sd2" and info["format"] == "kohya"
    assert info["extra_key_count"] == 0 and info["alphas"] == [1.0, 8.0] and info["module_count"] == 2
    assert info["ranks"] == [4, 16] and info["trigger_words"] == [] and info["top_tags"] == []
    assert info["network_type"] == "mixed" and not info["diffusers_loads"]  # a LoRA module beside a LoHa one
    text = format_info(info)
    assert "no metadata" in text and "cannot load" in text


def test_not_a_lora_file(tmp_path):
    (tmp_path / "x.safetensors").write_text("hello")
    with pytest.raises(UserError):
        inspect_file(tmp_path / "x.safetensors")
    with pytest.raises(UserError):
        inspect_file(tmp_path / "missing.safetensors")


def _cut(src, dst, keep):
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


def test_a_damaged_lora_cannot_be_read_as_training_says(ours, tmp_path, capsys):
    import struct

    from lora_studio.cli import main

    _, lora = ours
    truncated = _cut(lora, tmp_path / "cut.safetensors", lora.stat().st_size - 1000)
    with pytest.raises(UserError) as e:
        inspect_file(truncated)
    assert e.value.message.startswith("cut.safetensors cannot be read as a .safetensors file (it is 1,000 bytes shorter than its header says")
    assert e.value.hint.startswith("Download the model again")
    # A shape whose size overflows anything the file could hold, in a header that is otherwise whole.
    raw = lora.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    key = next(k for k in header if k.endswith("lora_down.weight"))
    header[key]["shape"] = [1 << 62, 1 << 62]
    blob = json.dumps(header).encode()
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
    assert main(["inspect", str(tmp_path / "huge.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "huge.safetensors cannot be read as a .safetensors file" in err and "does not match its" in err
    assert "download the model again" in err.lower()
