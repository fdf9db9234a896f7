"""diffusers → LDM single files: exact round trips, diffusers' own loader, and the real key layout."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from lora_studio.core.config import ModelConfig
from lora_studio.core.resources import resource
from lora_studio.engine.models import ldm_convert, tiny
from lora_studio.engine.models.load import load_models

KINDS = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Each tiny kind built once and written as a single file with its config sidecar."""
    root = tmp_path_factory.mktemp("ldm")
    out = {}
    for kind in KINDS:
        parts = tiny.build(kind)
        path = ldm_convert.save_single_file(parts, kind, root / f"tiny-{kind}.safetensors", config_sidecar=True)
        out[kind] = (parts, path)
    return out


def _encoders(parts, kind):
    return [parts["text_encoder"]] + ([parts["text_encoder_2"]] if kind == "sdxl" else [])


def _assert_same(original, loaded):
    a, b = original.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_our_loader_is_exact(written, kind):
    parts, path = written[kind]
    models = load_models(ModelConfig(base=str(path)))
    assert (models.kind, models.prediction, models.source) == (kind, "epsilon", "file")
    _assert_same(parts["unet"], models.unet)
    _assert_same(parts["vae"], models.vae)
    assert len(models.text_encoders) == len(_encoders(parts, kind))
    for original, loaded in zip(_encoders(parts, kind), models.text_encoders):
        assert type(original) is type(loaded)
        _assert_same(original, loaded)


@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_from_single_file_reads_our_unet_and_vae(written, kind):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    parts, path = written[kind]
    config = str(path.with_name(path.stem + ".config"))
    unet = UNet2DConditionModel.from_single_file(str(path), config=config, subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_single_file(str(path), config=config, subfolder="vae", local_files_only=True)
    _assert_same(parts["unet"], unet)
    _assert_same(parts["vae"], vae)


def test_sdxl_encoders_each_get_their_own_weights(written):
    parts, path = written["sdxl"]
    te1, te2 = load_models(ModelConfig(base=str(path))).text_encoders
    assert te1.config.hidden_size == 32 and te2.config.hidden_size == 48
    emb1 = te1.get_input_embeddings().weight
    emb2 = te2.get_input_embeddings().weight
    assert torch.equal(emb1, parts["text_encoder"].get_input_embeddings().weight)
    assert torch.equal(emb2, parts["text_encoder_2"].get_input_embeddings().weight)
    assert torch.equal(te2.text_projection.weight, parts["text_encoder_2"].text_projection.weight)


def _keys(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_slice(k).get_shape() for k in f.keys()}


def test_the_file_uses_ldm_names_and_shapes(written):
    sd1 = _keys(written["sd1"][1])
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in sd1
    assert "model.diffusion_model.input_blocks.2.0.op.weight" in sd1  # tiny: one layer per block
    assert "model.diffusion_model.output_blocks.1.1.conv.weight" in sd1  # upsampler after a plain block
    assert "model.diffusion_model.input_blocks.1.0.in_layers.2.weight" in sd1
    assert len(sd1["first_stage_model.encoder.mid.attn_1.q.weight"]) == 4  # LDM's 1x1-conv attention
    assert "first_stage_model.decoder.up.3.block.0.conv1.weight" in sd1
    assert "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in sd1
    assert not any(k.startswith(("unet.", "vae.", "text_encoder")) for k in sd1)

    sd2 = _keys(written["sd2"][1])
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == [96, 32]
    assert "cond_stage_model.model.positional_embedding" in sd2
    assert "cond_stage_model.model.ln_final.weight" in sd2

    parts, path = written["sdxl"]
    xl = _keys(path)
    assert "model.diffusion_model.label_emb.0.0.weight" in xl and "model.diffusion_model.label_emb.0.2.bias" in xl
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in xl
    assert xl["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"] == [144, 48]
    with safe_open(str(path), framework="pt") as f:
        # OpenCLIP multiplies x @ text_projection: the transpose of HF's Linear weight.
        proj = f.get_tensor("conditioner.embedders.1.model.text_projection")
        assert f.metadata() == {"modelspec.prediction_type": "epsilon"}
    assert torch.equal(proj, parts["text_encoder_2"].text_projection.weight.T)


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_full_size_layout_matches_diffusers_own_ldm_converter(name):
    """The mapping on the full-size architectures (meta tensors: no memory) inverts diffusers' LDM→diffusers one."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    folder = resource("models", name)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
    ldm_unet = ldm_convert.unet_to_ldm(unet.state_dict(), unet.config)
    ldm_vae = ldm_convert.vae_to_ldm(vae.state_dict(), vae.config)
    # The key counts of the official LDM checkpoints (sd-v1-5.safetensors, sd_xl_base_1.0.safetensors).
    assert len(ldm_unet) == {"sd1": 686, "sdxl": 1680}[name]
    assert len(ldm_vae) == 248
    if name == "sdxl":
        assert "model.diffusion_model.output_blocks.2.2.conv.weight" in ldm_unet
        assert "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight" in ldm_unet
        assert "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.ff.net.2.weight" in ldm_unet
    else:
        assert "model.diffusion_model.output_blocks.8.2.conv.weight" in ldm_unet
        assert "model.diffusion_model.middle_block.1.proj_in.weight" in ldm_unet
    back = convert_ldm_unet_checkpoint(ldm_unet, dict(unet.config))
    assert back.keys() == unet.state_dict().keys()
    back = convert_ldm_vae_checkpoint(ldm_vae, dict(vae.config))
    assert back.keys() == vae.state_dict().keys()
    assert all(back[k].shape == v.shape for k, v in vae.state_dict().items())


def test_v_pred_files_carry_the_marker(written, tmp_path):
    parts, _ = written["sd1"]
    path = ldm_convert.save_single_file(parts, "sd1", tmp_path / "v.safetensors", v_pred=True, config_sidecar=True)
    with safe_open(str(path), framework="pt") as f:
        assert "v_pred" in f.keys() and f.metadata()["modelspec.prediction_type"] == "v"
    assert load_models(ModelConfig(base=str(path))).prediction == "v"


def test_a_key_without_ldm_equivalent_is_an_error_not_a_silent_drop(written):
    parts, _ = written["sd1"]
    state = dict(parts["unet"].state_dict())
    state["mystery_block.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="mystery_block"):
        ldm_convert.unet_to_ldm(state, parts["unet"].config)


def test_half_precision_files(written, tmp_path):
    parts, _ = written["sd1"]
    path = ldm_convert.save_single_file(parts, "sd1", tmp_path / "half.safetensors", dtype=torch.float16)
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.float16
