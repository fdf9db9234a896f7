import pytest

from lora_studio.core.config import Config, validate
from lora_studio.core.errors import UserError
from lora_studio.core.presets import apply_preset, get_preset, list_presets, matching_preset


def test_both_presets_ship():
    assert {"style-sd15", "style-sdxl"} <= set(list_presets())


def test_sd15_preset_values():
    cfg = apply_preset(Config(), "style-sd15")
    assert (cfg.network.rank, cfg.network.alpha, cfg.train.learning_rate) == (16, 16.0, 1e-4)
    assert (cfg.train.resolution, cfg.train.batch_size, cfg.train.max_steps) == (512, 2, 1500)
    assert cfg.train.lr_scheduler == "cosine"


def test_sdxl_preset_values():
    cfg = apply_preset(Config(), "style-sdxl")
    assert (cfg.network.rank, cfg.network.alpha, cfg.train.learning_rate) == (16, 16.0, 1e-4)
    assert (cfg.train.resolution, cfg.train.batch_size, cfg.train.mixed_precision) == (1024, 1, "bf16")
    assert cfg.train.cache_latents and cfg.train.cache_text_encoder and not cfg.network.train_text_encoder


def test_apply_keeps_what_the_preset_does_not_name():
    cfg = Config().replace(model={"base": "m.safetensors"}, output={"trigger": "zzstyle"}, train={"seed": 7})
    out = apply_preset(cfg, "style-sdxl")
    assert out.model.base == "m.safetensors" and out.output.trigger == "zzstyle" and out.train.seed == 7
    assert cfg.train.resolution == 512  # the input is not changed


def test_presets_pass_validation_once_paths_are_set():
    for name in list_presets():
        cfg = apply_preset(Config(), name).replace(model={"base": "m"}, dataset={"path": "d"}, output={"dir": "o"})
        assert validate(cfg) == [], name
        assert get_preset(name).label


def test_matching_preset_and_unknown_name():
    cfg = apply_preset(Config(), "style-sdxl")
    assert matching_preset(cfg) == "style-sdxl"
    assert matching_preset(cfg.replace(network={"rank": 32})) is None
    with pytest.raises(UserError):
        apply_preset(cfg, "nope")
