"""Issue #12 item 6: the SDXL presets — Illustrious / Pony, NoobAI v-pred, and SDXL on an 8 GB card."""

from lora_studio.core import fit, fit_advice
from lora_studio.core.config import Config
from lora_studio.core.presets import apply_preset, get_preset, list_presets, matching_preset

SDXL_PRESETS = {
    "style-sdxl-illustrious": "Style — SDXL (Illustrious / Pony)",
    "style-sdxl-noobai-vpred": "Style — NoobAI v-pred",
    "style-sdxl-8gb": "Style — SDXL on 8 GB",
}


def test_they_ship_with_a_label_and_a_one_line_description_of_when_to_pick_them():
    assert set(SDXL_PRESETS) <= set(list_presets())
    for name, label in SDXL_PRESETS.items():
        preset = get_preset(name)
        assert preset.label == label
        assert preset.description.startswith("Pick it for ") and "\n" not in preset.description, name


def test_each_is_recognised_as_itself_and_not_as_another():
    for name in list_presets():
        assert matching_preset(apply_preset(Config(), name)) == name


def test_illustrious_pony_trains_tag_captions_at_1024():
    cfg = apply_preset(Config(), "style-sdxl-illustrious")
    assert (cfg.train.resolution, cfg.network.rank, cfg.network.alpha) == (1024, 16, 8.0)
    assert cfg.dataset.shuffle_tags and cfg.dataset.keep_tokens == 1
    # Shuffled tags are encoded afresh each time: caching the text would keep one order only.
    assert not cfg.train.cache_text_encoder
    assert cfg.model.prediction == "auto" and not cfg.train.zero_terminal_snr


def test_noobai_vpred_sets_v_prediction_and_zero_terminal_snr_explicitly():
    preset = get_preset("style-sdxl-noobai-vpred")
    assert preset.values["model.prediction"] == "v" and preset.values["train.zero_terminal_snr"] is True
    cfg = apply_preset(Config(), "style-sdxl-noobai-vpred")
    assert cfg.train.resolution == 1024 and cfg.sample.guidance_scale == 5.0


def test_sdxl_on_8_gb_fits_8_gb_at_1024_by_the_estimate():
    cfg = apply_preset(Config(), "style-sdxl-8gb")
    t = cfg.train
    assert (t.resolution, t.batch_size, t.base_weights, t.optimizer) == (1024, 1, "fp8", "adafactor")
    assert t.gradient_checkpointing and t.cache_latents and t.cache_text_encoder
    # The Settings tab's estimate: SDXL from the 1024 px resolution (no model chosen yet), and with an SDXL file.
    for kind in ("auto", "sdxl"):
        estimate = fit_advice.estimate_for_config(cfg.replace(model={"kind": kind}))
        assert fit.fits(estimate, 8 * fit.GB), fit.fit_report(estimate, 8 * fit.GB)
        assert estimate.total_bytes < 6 * fit.GB  # room for the desktop and the sample images on a real 8 GB card
        assert fit_advice.suggest_settings(cfg.replace(model={"kind": kind}), 8 * fit.GB) == []
    training = fit.estimate_peak_bytes("sdxl", 1024, 1, 16, gradient_checkpointing=True, base_weights="fp8",
                                       optimizer="adafactor", phase="training")
    assert training.total_bytes < 8 * fit.GB
    # The plain SDXL preset at batch 2 does not fit, which is why this one exists.
    plain = apply_preset(Config(), "style-sdxl").replace(train={"batch_size": 2, "gradient_checkpointing": False})
    assert not fit.fits(fit_advice.estimate_for_config(plain), 8 * fit.GB)
