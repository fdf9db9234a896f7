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


def test_sd15_prodigy_locon_preset_values():
    preset = get_preset("style-sd15-prodigy-locon")
    assert preset.label == "Style — SD 1.5, Prodigy + LoCon"
    cfg = apply_preset(Config(), "style-sd15-prodigy-locon")
    assert (cfg.network.type, cfg.network.rank, cfg.network.conv_rank, cfg.network.conv_alpha, cfg.network.dora) == ("locon", 16, 8, 4.0, False)
    assert (cfg.train.optimizer, cfg.train.learning_rate, cfg.train.resolution, cfg.train.batch_size) == ("prodigy", 1.0, 512, 2)


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


def test_presets_say_which_keys_they_set():
    from lora_studio.core.config import KEYS
    from lora_studio.core.presets import preset_keys

    for name in list_presets():
        preset = get_preset(name)
        assert preset.keys == {f"{s}.{k}" for s, values in preset.settings.items() for k in values}
        assert preset.keys <= set(KEYS) and "train.resolution" in preset.keys
        assert preset.matches(apply_preset(Config(), name))
    assert preset_keys() == set().union(*(get_preset(n).keys for n in list_presets()))
    # The hand-written list the Settings tab used to keep missed these; they are the presets' own now.
    assert {"network.targets", "train.warmup_steps", "train.optimizer", "train.checkpoint_every", "dataset.bucket_step",
            "sample.every", "network.train_text_encoder"} <= preset_keys()


def test_a_new_sd15_project_has_buckets_at_every_resolution():
    from lora_studio.core.buckets import buckets_for

    cfg = apply_preset(Config(), "style-sd15")
    for resolution in (128, 192, 256, 384, 512, 768):
        assert buckets_for(cfg.with_changes({"train.resolution": resolution}))
