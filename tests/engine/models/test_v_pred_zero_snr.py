"""Issue #12 item 1: SDXL v-prediction with zero terminal SNR (NoobAI-XL v-pred), read from the file's
`v_pred` and `ztsnr` keys, trained and sampled as such, and said so in a status event and the export."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from engine_fixtures import make_dataset, tiny_config
from safetensors import safe_open

from lora_studio.core import events as ev
from lora_studio.core.prediction import note_for
from lora_studio.core.config import TrainConfig
from lora_studio.engine.models import ldm_convert, tiny
from lora_studio.engine.training import losses, sampling, timesteps
from lora_studio.engine.training.loop import train

SD_SCHEDULE = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def test_weights_and_timestep_samplers_stay_finite_at_zero_snr():
    ac = DDPMScheduler(**SD_SCHEDULE, rescale_betas_zero_snr=True).alphas_cumprod
    assert ac[-1] == 0  # the rescaled schedule's last timestep is pure noise
    t = torch.tensor([0, 500, 998, 999])
    for prediction in ("epsilon", "v"):
        for w in (losses.min_snr_weights(ac, t, 5.0, prediction), losses.debiased_weights(ac, t, prediction)):
            assert torch.isfinite(w).all(), (prediction, w)
    assert losses.min_snr_weights(ac, t, 5.0, "epsilon")[-1] == 1  # min(SNR, γ) / SNR → 1 as SNR → 0
    assert losses.debiased_weights(ac, t, "epsilon")[-1] <= 1 / DDPMScheduler(**SD_SCHEDULE).alphas_cumprod[-1] ** 0.5
    # The usual schedule's weights are unchanged by the zero-SNR guards.
    plain = DDPMScheduler(**SD_SCHEDULE).alphas_cumprod
    s = plain[t] / (1 - plain[t])
    assert torch.allclose(losses.min_snr_weights(plain, t, 5.0, "epsilon"), s.clamp(max=5.0) / s)
    for kind in ("style", "logit_normal"):
        w = timesteps.timestep_weights(TrainConfig(timestep_sampling=kind), ac)
        assert torch.isfinite(w).all() and abs(float(w.sum()) - 1) < 1e-5


def test_a_noobai_style_sdxl_file_trains_v_with_zero_snr_with_no_setting_changed(tmp_path, monkeypatch):
    # The markers alone, no modelspec metadata: what NoobAI-XL v-pred files carry.
    model = ldm_convert.save_single_file(tiny.build("sdxl", seed=3), "sdxl", tmp_path / "noob-vpred.safetensors",
                                         v_pred=True, ztsnr=True, metadata={}, config_sidecar=True)
    with safe_open(str(model), framework="pt") as f:
        assert {"v_pred", "ztsnr"} <= set(f.keys()) and not f.metadata()
    data = make_dataset(tmp_path / "data" / "2_tstyle", n=2, sizes=((64, 64),))
    cfg = tiny_config(model, data, tmp_path / "run", train={"max_steps": 2, "min_snr_gamma": 5.0},
                      sample={"prompts": ["tstyle, a circle"], "steps": 2, "rank": False})
    assert cfg.model.prediction == "auto" and cfg.train.zero_terminal_snr is False

    schedulers = []
    real_build = sampling.build_pipeline

    def build(models, unet, tes):
        pipe = real_build(models, unet, tes)
        schedulers.append(dict(pipe.scheduler.config))
        return pipe

    monkeypatch.setattr(sampling, "build_pipeline", build)
    sink = ev.ListSink()
    finished = train(cfg, sink)
    assert finished.status == "completed"
    statuses = [s.message for s in sink.of_type(ev.Status)]
    assert "v-prediction with zero terminal SNR, read from the file's v_pred and ztsnr keys" in statuses
    assert note_for(cfg) in statuses  # what the app said when the model was chosen
    assert sink.of_type(ev.Started)[0].prediction == "v"
    assert not [w for w in sink.of_type(ev.Warning) if w.code == "zero_snr_epsilon"]
    assert all(p.loss == p.loss for p in sink.of_type(ev.Progress))  # finite (NaN != NaN)
    assert schedulers and all(c["prediction_type"] == "v_prediction" and c["rescale_betas_zero_snr"]
                              and c["timestep_spacing"] == "trailing" for c in schedulers)
    exported = sink.of_type(ev.Exported)[0]
    assert exported.verified, exported.problems
    with safe_open(exported.path, framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_zero_terminal_snr"] == "True" and meta["modelspec.prediction_type"] == "v"


def test_the_setting_turns_zero_snr_on_and_the_sampler_follows(tmp_path):
    from lora_studio.core.config import ModelConfig
    from lora_studio.engine.models.load import load_models

    model = ldm_convert.save_single_file(tiny.build("sd1", seed=3), "sd1", tmp_path / "v.safetensors", v_pred=True,
                                         config_sidecar=True)
    plain = load_models(ModelConfig(base=str(model)))
    assert not plain.zero_terminal_snr and not plain.scheduler_config.get("rescale_betas_zero_snr")
    assert sampling.guidance_rescale(plain) == 0.0
    models = load_models(ModelConfig(base=str(model)), zero_terminal_snr=True)
    assert models.zero_terminal_snr and models.scheduler_config["rescale_betas_zero_snr"] is True
    assert any("zero terminal SNR (from train.zero_terminal_snr)" in n for n in models.notes)
    assert sampling.sampler_config(models)["timestep_spacing"] == "trailing"
    assert sampling.guidance_rescale(models) == 0.7


def test_a_diffusers_folder_says_it_in_its_scheduler_config_and_training_reaches_zero_snr(tmp_path):
    import json

    from lora_studio.core.config import ModelConfig
    from lora_studio.engine.models.load import load_models

    folder = tiny.save_diffusers(tmp_path / "tiny-v", "sd1", "v")
    sched_file = folder / "scheduler" / "scheduler_config.json"
    sched_file.write_text(json.dumps({**json.loads(sched_file.read_text()), "rescale_betas_zero_snr": True}))
    models = load_models(ModelConfig(base=str(folder)))
    assert models.zero_terminal_snr and models.prediction == "v"
    assert "v-prediction (from the scheduler config) with zero terminal SNR (from the scheduler config)" in models.notes
    # The training schedule (step.Trainer builds it from this config) ends at pure noise.
    assert DDPMScheduler.from_config(models.scheduler_config).alphas_cumprod[-1] == 0
