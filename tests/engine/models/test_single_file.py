"""Single-file bases: architecture detection, refusals that name what was found, prediction rules, no pickle."""

from __future__ import annotations

import builtins
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lora_studio.core.config import ModelConfig
from lora_studio.core.errors import UserError
from lora_studio.engine.models import ldm_convert, single_file, tiny
from lora_studio.engine.models.load import load_models


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sf")
    out = {}
    for kind in ("sd1", "sd2", "sdxl"):
        parts = tiny.build(kind)
        path = ldm_convert.save_single_file(parts, kind, root / f"{kind}.safetensors", config_sidecar=True)
        out[kind] = (parts, path)
    return out


def _refusal(state, tmp_path, name="model.safetensors"):
    path = tmp_path / name
    save_file(state, str(path))
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(path)))
    return e.value


def _unet_stub(in_channels=4, context=768):
    return {
        single_file.UNET_IN: torch.zeros(8, in_channels, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, context),
    }


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_detects_the_architecture_from_keys_and_widths(files, kind):
    state = load_file(str(files[kind][1]))
    found = single_file.detect(state)
    assert found.kind == kind
    assert found.widths == {"sd1": [32], "sd2": [32], "sdxl": [32, 48]}[kind]


def test_detect_file_reads_only_the_header(files, tmp_path):
    assert single_file.detect_file(files["sdxl"][1]).widths == [32, 48]
    save_file(_unet_stub(in_channels=9) | {single_file.SD1_CLIP: torch.zeros(77, 768)}, str(tmp_path / "inpaint.safetensors"))
    with pytest.raises(UserError, match="inpainting"):
        single_file.detect_file(tmp_path / "inpaint.safetensors")


def test_sdxl_refiner_is_refused_naming_what_was_found(tmp_path):
    state = _unet_stub(context=1280) | {
        single_file.REFINER_OPENCLIP: torch.zeros(77, 1280),
        "model.diffusion_model.label_emb.0.0.weight": torch.zeros(8, 2560),
    }
    err = _refusal(state, tmp_path)
    assert err.code == "unsupported_model"
    assert "SDXL refiner" in err.message and "1280 wide" in err.message and "2560" in err.message
    assert "base" in err.hint


@pytest.mark.parametrize(
    "state, found",
    [
        (_unet_stub(in_channels=9) | {single_file.SD1_CLIP: torch.zeros(77, 768)}, "inpainting model"),
        ({"model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": torch.zeros(2)}, "Stable Diffusion 3"),
        ({"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(2)}, "Flux"),
        ({"clip_txt_mapper.weight": torch.zeros(2, 2)}, "Stable Cascade"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 2)}, "a LoRA"),
        ({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_in.weight": torch.zeros(1)}, "a VAE only"),
        ({"something.else": torch.zeros(1)}, "not a Stable Diffusion checkpoint"),
        (_unet_stub(), "a UNet without text encoders"),
        (_unet_stub(context=1024) | {single_file.SD1_CLIP: torch.zeros(77, 768)}, "cross-attention is 1024 wide"),
    ],
)
def test_other_models_are_refused_with_what_was_found(tmp_path, state, found):
    err = _refusal(state, tmp_path)
    assert err.code == "unsupported_model"
    assert found in err.message and "model.safetensors" in err.message


def test_a1111_yaml_beside_the_file_makes_it_v_and_the_reason_is_a_note(files, tmp_path):
    parts, _ = files["sd2"]
    path = ldm_convert.save_single_file(parts, "sd2", tmp_path / "my-sd2.safetensors", metadata={}, config_sidecar=True)
    assert load_models(ModelConfig(base=str(path))).prediction == "epsilon"
    (tmp_path / "my-sd2.yaml").write_text("model:\n  params:\n    parameterization: v\n")
    models = load_models(ModelConfig(base=str(path)))
    assert models.prediction == "v" and models.scheduler_config["prediction_type"] == "v_prediction"
    assert any("my-sd2.yaml says parameterization: v" in n for n in models.notes)


def test_config_dir_override_and_shipped_default(files, tmp_path):
    parts, sidecar_file = files["sd1"]
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(sidecar_file.read_bytes())
    # Without a config the shipped full-size SD1.5 config is used: a tiny file does not fit it.
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(bare)))
    assert e.value.code == "model_config_mismatch" and "sd1" in e.value.message and ".config" in e.value.hint
    config = sidecar_file.with_name(sidecar_file.stem + ".config")
    models = load_models(ModelConfig(base=str(bare)), config_dir=config)
    assert torch.equal(models.unet.conv_in.weight, parts["unet"].conv_in.weight)
    assert models.config_dir == config and any("(given)" in n for n in models.notes)


def test_the_file_must_match_the_config_widths(files, tmp_path):
    # The sd2 tiny config describes a 32-wide encoder; an SDXL config given for an SD1 file must not "load".
    _, sd1 = files["sd1"]
    _, xl = files["sdxl"]
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(sd1)), config_dir=xl.with_name(xl.stem + ".config"))
    assert e.value.code == "model_config_mismatch"


def test_old_sd1_files_without_the_text_model_level_load(files, tmp_path):
    parts, path = files["sd1"]
    old = "cond_stage_model.transformer."
    state = {k.replace(old + "text_model.", old): v for k, v in load_file(str(path)).items()}
    target = tmp_path / "old.safetensors"
    save_file(state, str(target))
    shutil.copytree(path.with_name(path.stem + ".config"), tmp_path / "old.config")
    te = load_models(ModelConfig(base=str(target))).text_encoders[0]
    assert torch.equal(te.get_input_embeddings().weight, parts["text_encoder"].get_input_embeddings().weight)


def test_text_encoder_keys_fit_flat_and_nested_transformers_layouts():
    parts = tiny.build("sdxl")
    for encoder in (parts["text_encoder"], parts["text_encoder_2"]):
        canonical = ldm_convert.canonical_text_encoder_state(encoder)
        assert all(k.startswith(("text_model.", "text_projection.")) for k in canonical)
        fitted = single_file.fit_text_encoder_keys(set(encoder.state_dict()), canonical)
        assert set(fitted) == {k for k in encoder.state_dict() if not k.endswith("position_ids")}


def test_safe_ckpt_loads_like_the_safetensors(files, tmp_path):
    parts, path = files["sd1"]
    ckpt = tmp_path / "plain.ckpt"
    torch.save({"state_dict": load_file(str(path)), "global_step": 10, "epoch": 1}, ckpt)
    shutil.copytree(path.with_name(path.stem + ".config"), tmp_path / "plain.config")
    models = load_models(ModelConfig(base=str(ckpt)))
    assert models.kind == "sd1"
    assert torch.equal(models.unet.conv_out.weight, parts["unet"].conv_out.weight)


class _Payload:
    """A pickle that creates a marker file when unpickled: what a malicious .ckpt does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path):
    # First prove the payload is live: an ordinary unpickling creates its marker.
    proof = tmp_path / "proof-marker"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()

    marker = tmp_path / "pwned-marker"
    zipped = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2), "x": _Payload(marker)}}, zipped)
    raw = tmp_path / "evil-raw.pt"
    raw.write_bytes(pickle.dumps({"state_dict": {"x": _Payload(marker)}}))
    for path in (zipped, raw):
        with pytest.raises(UserError) as e:
            load_models(ModelConfig(base=str(path)))
        assert e.value.code == "unsafe_checkpoint"
        assert path.name in e.value.message and "safetensors" in e.value.hint
    assert not marker.exists()


def test_damaged_files_are_user_errors(tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(bad)))
    assert e.value.code == "bad_model"
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(junk)))
    assert e.value.code == "bad_model"
