"""The shipped configs build the real architectures, and a folder and a file load into the same Models."""

from __future__ import annotations

import json

import pytest
import torch

from lora_studio.core.config import ModelConfig
from lora_studio.core.errors import UserError
from lora_studio.core.resources import resource
from lora_studio.engine.models import ldm_convert, tiny
from lora_studio.core.model_kinds import CONFIG_NAMES, shipped_config
from lora_studio.engine.models.load import load_models
from lora_studio.engine.models.tokenizers import tokenizer_for


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta(cls, folder, sub):
    # Built on the meta device: full-size architectures without allocating a byte of weights.
    with torch.device("meta"):
        if hasattr(cls, "load_config"):
            return cls.from_config(cls.load_config(folder, subfolder=sub, local_files_only=True))
        from transformers import CLIPTextConfig

        return cls(CLIPTextConfig.from_pretrained(folder, subfolder=sub, local_files_only=True))


# Parameter counts of the official weights (runwayml SD1.5, SD2.1(-base), SDXL base 1.0).
UNET_PARAMS = {"sd1": 859_520_964, "sd2": 865_910_724, "sd2-v": 865_910_724, "sdxl": 2_567_463_684}
TE_PARAMS = {"sd1": [123_060_480], "sd2": [340_387_840], "sd2-v": [340_387_840], "sdxl": [123_060_480, 694_659_840]}


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_shipped_configs_build_the_real_architectures(name):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = resource("models", name)
    unet = _meta(UNet2DConditionModel, folder, "unet")
    assert _count(unet) == UNET_PARAMS[name]
    assert _count(_meta(AutoencoderKL, folder, "vae")) == 83_653_863
    encoders = [_meta(CLIPTextModel, folder, "text_encoder")]
    if name == "sdxl":
        encoders.append(_meta(CLIPTextModelWithProjection, folder, "text_encoder_2"))
    assert [_count(e) for e in encoders] == TE_PARAMS[name]
    index = json.loads((folder / "model_index.json").read_text())
    assert ("text_encoder_2" in index) == (name == "sdxl")
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched.get("prediction_type", "epsilon") == ("v_prediction" if name == "sd2-v" else "epsilon")


def test_shipped_config_key_numbers():
    def cfg(name, sub):
        return json.loads((resource("models", name) / sub / "config.json").read_text())

    assert cfg("sd1", "unet")["cross_attention_dim"] == 768
    assert cfg("sd2", "unet")["attention_head_dim"] == [5, 10, 20, 20]
    assert cfg("sd2-v", "unet")["upcast_attention"] is True
    xl = cfg("sdxl", "unet")
    assert (xl["transformer_layers_per_block"], xl["addition_time_embed_dim"]) == ([1, 2, 10], 256)
    assert (xl["projection_class_embeddings_input_dim"], xl["cross_attention_dim"]) == (2816, 2048)
    assert cfg("sdxl", "vae")["scaling_factor"] == 0.13025
    assert cfg("sd1", "text_encoder")["hidden_act"] == "quick_gelu"
    assert cfg("sd2", "text_encoder")["num_hidden_layers"] == 23
    assert cfg("sdxl", "text_encoder_2")["projection_dim"] == 1280
    assert shipped_config("sd2", "v").name == "sd2-v" and shipped_config("sd2").name == "sd2"


def test_tokenizers_share_one_vocabulary_and_pad_as_the_models_expect():
    sd1, sd2, xl2 = tokenizer_for("sd1"), tokenizer_for("sd2"), tokenizer_for("sdxl", second=True)
    ids = sd1("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert sd1.pad_token_id == 49407 and sd2.pad_token_id == 0 and xl2.pad_token_id == 0
    assert tokenizer_for("sdxl").pad_token_id == 49407
    assert sd1.model_max_length == 77


@pytest.fixture(scope="module")
def sdxl_pair(tmp_path_factory):
    """The same tiny SDXL as a diffusers folder and as a single file with a config sidecar."""
    root = tmp_path_factory.mktemp("pair")
    folder = tiny.save_diffusers(root / "folder", "sdxl")
    parts = tiny.build("sdxl")
    file = ldm_convert.save_single_file(parts, "sdxl", root / "tiny-xl.safetensors", config_sidecar=True)
    return folder, file


def _state(model):
    return {k: v for k, v in model.state_dict().items()}


def test_folder_and_file_give_the_same_models(sdxl_pair):
    folder, file = sdxl_pair
    a = load_models(ModelConfig(base=str(folder)))
    b = load_models(ModelConfig(base=str(file)))
    assert (a.kind, a.prediction, b.kind, b.prediction) == ("sdxl", "epsilon", "sdxl", "epsilon")
    assert (a.source, b.source) == ("folder", "file")
    assert b.base_name == "tiny-xl.safetensors" and b.notes
    for ma, mb in [(a.unet, b.unet), (a.vae, b.vae), *zip(a.text_encoders, b.text_encoders)]:
        sa, sb = _state(ma), _state(mb)
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not mb.training and not any(p.requires_grad for p in mb.parameters())
    assert a.scheduler_config["prediction_type"] == b.scheduler_config["prediction_type"] == "epsilon"
    assert [t.pad_token_id for t in a.tokenizers] == [t.pad_token_id for t in b.tokenizers]
    assert a.tokenizers[1]("a cat").input_ids == b.tokenizers[1]("a cat").input_ids


def test_dtype_applies_to_unet_and_text_encoders_but_not_the_vae(sdxl_pair):
    _, file = sdxl_pair
    m = load_models(ModelConfig(base=str(file)), torch.bfloat16)
    assert m.unet.dtype == torch.bfloat16 and m.vae.dtype == torch.float32
    assert all(e.dtype == torch.bfloat16 for e in m.text_encoders)


def test_a_wrong_kind_is_refused_with_the_found_kind(sdxl_pair):
    folder, file = sdxl_pair
    for base in (folder, file):
        with pytest.raises(UserError, match="holds an SDXL model") as e:
            load_models(ModelConfig(base=str(base), kind="sd1"))
        assert e.value.code == "wrong_model_kind"


def test_missing_and_unreadable_bases_are_user_errors(tmp_path):
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(tmp_path / "nope.safetensors")))
    assert e.value.code == "model_not_found"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no model_index.json"):
        load_models(ModelConfig(base=str(tmp_path / "empty")))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="not a checkpoint file"):
        load_models(ModelConfig(base=str(tmp_path / "notes.txt")))



@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_folder_with_damaged_weights_says_which_part(tiny_model_dir, tmp_path, damage):
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = folder / "text_encoder" / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(folder)))
    assert e.value.code == "bad_model"
    assert e.value.message.startswith("The text_encoder of the model folder model cannot be loaded (")
    holds = "(it holds config.json)" if damage == "missing" else "(it holds config.json, model.safetensors)"
    assert holds in e.value.message
    assert "download the model again" in e.value.hint

def test_vae_override_from_a_single_vae_file(sdxl_pair, tmp_path):
    from safetensors.torch import save_file

    folder, _ = sdxl_pair
    other = tiny.build("sdxl", seed=7)["vae"]
    ldm = ldm_convert.vae_to_ldm(other.state_dict(), prefix="")  # standalone VAE files carry no prefix
    save_file(ldm, tmp_path / "vae.safetensors")
    m = load_models(ModelConfig(base=str(folder), vae=str(tmp_path / "vae.safetensors")))
    assert torch.equal(m.vae.decoder.conv_out.weight, other.decoder.conv_out.weight)
    assert any("VAE replaced" in n for n in m.notes)
