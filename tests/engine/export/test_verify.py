"""Verification catches every kind of key a loader would refuse, and passes a good export."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lora_studio.core.config import Config
from lora_studio.engine.export import kohya
from lora_studio.engine.export.export import write_kohya
from lora_studio.engine.export.verify import RANK, reference_for_base, reference_modules, verify_file
from lora_studio.engine.models import tiny

R = 4
STATE = {"step": 10, "epoch": 1, "model_kind": "sd1", "prediction": "epsilon", "base_model": "base", "base_name": "base",
         "rank": R, "alpha": 8.0, "resolution": 64, "training_started_at": 1.0}


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    """A tiny SD1 saved as a diffusers folder, its components, and a verified attention LoRA for it."""
    root = tmp_path_factory.mktemp("verify")
    base = tiny.save_diffusers(root / "base", "sd1")
    parts = tiny.build("sd1")
    lora = {}
    for part, model in (("unet", parts["unet"]), ("te1", parts["text_encoder"])):
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj")):
                name = name if part == "unet" or name.startswith("text_model.") else "text_model." + name
                lora[f"{part}.{name}.lora_A.weight"] = torch.randn(R, m.in_features)
                lora[f"{part}.{name}.lora_B.weight"] = torch.randn(m.out_features, R)
    good = write_kohya(lora, STATE, Config(), root / "good.safetensors", preview_src=None)
    return base, parts, good


def _tensors(path: Path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _resave(src: Path, dst: Path, change) -> Path:
    """A copy of `src` with its tensors changed by `change(tensors)`, hashes recomputed as the writer does."""
    tensors, md = _tensors(src)
    change(tensors)
    md["sshs_model_hash"], md["sshs_legacy_hash"] = kohya.precalculate_hashes(tensors, md)
    save_file(tensors, str(dst), md)
    return dst


def _rewrite_header(src: Path, dst: Path, change) -> Path:
    """A copy of `src` with its raw JSON header edited (for things safetensors itself refuses to write)."""
    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    change(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return dst


def test_reference_names_every_linear_and_conv_through_the_canonical_text_encoder_path(sd1):
    base, parts, _ = sd1
    unet, te = parts["unet"], parts["text_encoder"]
    ref = reference_modules("sd1", unet, [te])
    n_unet = sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in unet.modules())
    n_te = sum(isinstance(m, torch.nn.Linear) for m in te.modules())
    assert len(ref) == n_unet + n_te
    assert ref["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"] == ((RANK, 32), (32, RANK))
    assert ref["lora_unet_conv_in"] == ((RANK, 4, 3, 3), (32, RANK, 1, 1))
    assert ref["lora_te_text_model_encoder_layers_1_mlp_fc1"] == ((RANK, 32), (64, RANK))
    # Whatever layout transformers uses (top-level `encoder.` since 5.6), the names read `text_model_encoder`.
    assert not any(k.startswith("lora_te_encoder_") for k in ref)
    # The meta-device build from the saved folder's configs gives the same reference.
    assert reference_for_base(base, "sd1") == ref
    assert reference_for_base(base) == ref  # kind detected from the folder


def test_names_parse_back_to_their_module_paths(sd1):
    _, parts, _ = sd1
    sdxl = tiny.build("sdxl")
    for kind, unet, encoders in (("sd1", parts["unet"], [parts["text_encoder"]]), ("sdxl", sdxl["unet"], [sdxl["text_encoder"], sdxl["text_encoder_2"]])):
        for name, m in unet.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                assert kohya.parse_kohya_name(kohya.kohya_name("unet", name, kind)) == ("unet", name)
        for part, te in zip(("te1", "te2"), encoders):
            for name, m in te.named_modules():
                if isinstance(m, torch.nn.Linear):
                    canonical = name if name.startswith(("text_model.", "text_projection")) else "text_model." + name
                    assert kohya.parse_kohya_name(kohya.kohya_name(part, name, kind)) == (part, canonical)
    assert kohya.kohya_name("te1", "encoder.layers.0.self_attn.q_proj", "sd2") == "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert kohya.parse_kohya_name("lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha")[0] == "te1"
    with pytest.raises(ValueError):
        kohya.kohya_name("te2", "text_model.encoder.layers.0.self_attn.q_proj", "sd1")


def test_a_good_export_verifies(sd1):
    base, _, good = sd1
    assert verify_file(good, reference_for_base(base)) == []
    assert verify_file(good, None) == []  # format-only check


def _problems(sd1, tmp_path, change=None, header_change=None):
    base, _, good = sd1
    path = tmp_path / "bad.safetensors"
    if change:
        _resave(good, path, change)
    else:
        _rewrite_header(good, path, header_change)
    return verify_file(path, reference_for_base(base))


Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def test_catches_a_name_that_maps_to_no_module(sd1, tmp_path):
    def rename(t):
        for s in ("lora_down.weight", "lora_up.weight", "alpha"):
            t[f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_7_attn1_to_q.{s}"] = t.pop(f"{Q}.{s}")
    (p,) = _problems(sd1, tmp_path, rename)
    assert "transformer_blocks_7_attn1_to_q maps to no module" in p


def test_catches_a_wrong_shape(sd1, tmp_path):
    def widen(t):
        t[f"{Q}.lora_down.weight"] = torch.zeros(R, 48, dtype=torch.float16)
    (p,) = _problems(sd1, tmp_path, widen)
    assert Q in p and "[4, 48]" in p and "[rank, 32]" in p


def test_catches_stray_keys(sd1, tmp_path):
    def add(t):
        t[f"{Q}.lora_magnitude_vector"] = torch.ones(32, dtype=torch.float16)  # peft's DoRA name, not LyCORIS's dora_scale
        t[f"{Q}.lora_middle.weight"] = torch.zeros(R, R, 3, 3, dtype=torch.float16)
    problems = _problems(sd1, tmp_path, add)
    assert len(problems) == 2 and all("is a stray key" in p for p in problems)
    # diffusers refuses such a file outright: verification agrees with the loader.
    from diffusers import StableDiffusionPipeline

    with pytest.raises(ValueError, match="not been correctly renamed"):
        StableDiffusionPipeline.lora_state_dict(str(tmp_path / "bad.safetensors"))


def test_catches_an_unprefixed_key_that_makes_diffusers_drop_the_rest(sd1, tmp_path):
    path = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"

    def add(t):
        t[f"{path}.lora_A.weight"] = torch.zeros(R, 32, dtype=torch.float16)
        t[f"{path}.lora_B.weight"] = torch.zeros(32, R, dtype=torch.float16)
    problems = _problems(sd1, tmp_path, add)
    assert len(problems) == 2 and all("does not start with lora_unet_" in p for p in problems)
    # Why it matters: one non-kohya key and diffusers no longer converts the kohya names; it silently
    # applies the one peft-style module and drops the 40 others.
    from peft.tuners.lora import LoraLayer

    pipe = tiny.pipeline("sd1")
    pipe.load_lora_weights(str(tmp_path / "bad.safetensors"))
    assert sum(isinstance(m, LoraLayer) for m in pipe.unet.modules()) == 1
    assert not any(isinstance(m, LoraLayer) for m in pipe.text_encoder.modules())


def test_catches_missing_alpha_and_half_modules(sd1, tmp_path):
    def drop(t):
        del t[f"{Q}.alpha"]
        del t["lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_up.weight"]
    problems = _problems(sd1, tmp_path, drop)
    assert len(problems) == 2
    assert any(f"{Q} has no alpha" in p for p in problems)
    assert any("k_proj has no lora_up.weight" in p for p in problems)


def test_catches_mixed_dtypes(sd1, tmp_path):
    def mix(t):
        t[f"{Q}.lora_up.weight"] = t[f"{Q}.lora_up.weight"].float()
    (p,) = _problems(sd1, tmp_path, mix)
    assert "mix dtypes" in p and "F32" in p and "F16" in p


def test_catches_bad_metadata(sd1, tmp_path):
    def edit(h):
        md = h["__metadata__"]
        md["ss_network_dim"] = 4  # a number, not a string: safetensors refuses to write this
        del md["modelspec.architecture"], md["ss_tag_frequency"]
    problems = _problems(sd1, tmp_path, header_change=edit)
    assert any("must all be strings" in p and "ss_network_dim" in p for p in problems)
    assert any("lacks modelspec.architecture, ss_tag_frequency" in p or ("modelspec.architecture" in p and "ss_tag_frequency" in p) for p in problems)


def test_catches_a_changed_tensor_through_the_hash(sd1, tmp_path):
    base, _, good = sd1
    tensors, md = _tensors(good)
    tensors[f"{Q}.lora_up.weight"] += 1
    save_file(tensors, str(tmp_path / "edited.safetensors"), md)
    assert verify_file(tmp_path / "edited.safetensors", reference_for_base(base)) == ["sshs_model_hash does not match the file's tensor data."]


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x01\x00")
    (p,) = verify_file(tmp_path / "x.safetensors", None)
    assert "not a readable safetensors file" in p


def test_reference_for_a_single_file_checkpoint(tmp_path):
    # An original-layout (LDM) SDXL file: its kind is read from the header, its architecture from the
    # configs the loader would use (here the `<stem>.config/` sidecar of a tiny model); no weights load.
    from lora_studio.engine.models.ldm_convert import save_single_file

    parts = tiny.build("sdxl")
    path = save_single_file(parts, "sdxl", tmp_path / "xl.safetensors", config_sidecar=True)
    ref = reference_for_base(path)
    assert ref == reference_modules("sdxl", parts["unet"], [parts["text_encoder"], parts["text_encoder_2"]])
    assert ref["lora_te2_text_model_encoder_layers_1_self_attn_q_proj"] == ((RANK, 48), (48, RANK))


def test_catches_a_dora_scale_on_the_input_axis(sd1, tmp_path):
    # LyCORIS writes the magnitude along the output axis ([out, 1]); [1, in] is the older orientation.
    def add(t):
        t[f"{Q}.dora_scale"] = torch.ones(1, 32, dtype=torch.float16)
    (p,) = _problems(sd1, tmp_path, add)
    assert Q in p and "output axis" in p and "[32, 1]" in p
