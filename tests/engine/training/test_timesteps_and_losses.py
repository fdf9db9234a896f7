"""Timestep control (uniform over a range, logit-normal, the style sampler) and the training loss (MSE,
scheduled pseudo-Huber, debiased weighting): the drawn timesteps have the stated shape, the losses the
stated values, and a run with them trains, stays finite and resumes exactly."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from engine_fixtures import make_dataset, tiny_config
from safetensors.torch import load_file

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError
from lora_studio.core.resources import resource
from lora_studio.engine.training import checkpoint, losses, timesteps
from lora_studio.engine.training.loop import ScriptedCommands, train

SD1 = DDPMScheduler.from_pretrained(str(resource("models", "sd1")), subfolder="scheduler")
N = SD1.config.num_train_timesteps


def _train(**changes):
    return config_mod.Config().replace(train=changes).train


def _draw(train, count=20_000, seed=0):
    weights = timesteps.timestep_weights(train, SD1.alphas_cumprod)
    g = torch.Generator().manual_seed(seed)
    return timesteps.draw_timesteps(train, weights, N, count, g, torch.device("cpu"))


def test_uniform_stays_the_plain_draw_and_keeps_to_its_range():
    plain = _train()
    assert timesteps.timestep_weights(plain, SD1.alphas_cumprod) is None
    g = torch.Generator().manual_seed(3)
    expected = torch.randint(0, N, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(timesteps.draw_timesteps(plain, None, N, 64, g, torch.device("cpu")), expected)  # old runs unchanged

    t = _draw(_train(min_timestep=200, max_timestep=600))
    assert t.min() >= 200 and t.max() < 600
    counts = torch.bincount(t // 100, minlength=10)[2:6].float()
    assert counts.min() / counts.max() > 0.9  # flat across the range


def test_logit_normal_favours_the_middle_noise_levels():
    t = _draw(_train(timestep_sampling="logit_normal"))
    middle = ((t >= 333) & (t < 667)).float().mean()
    assert middle > 0.5 and abs(t.float().median() - 500) < 25
    shifted = _draw(_train(timestep_sampling="logit_normal", logit_mean=1.0))
    assert shifted.float().median() > 650  # a positive mean moves towards high noise


def test_the_style_sampler_trains_mostly_at_high_noise_and_respects_the_range():
    t = _draw(_train(timestep_sampling="style"))
    assert (t >= 500).float().mean() > 0.8 and t.float().median() > 700
    assert (t < 200).float().mean() < 0.05  # the fine-detail end is rare, not absent
    assert (t == N - 1).float().mean() < 0.2  # not crowded onto the last timestep
    lower = _draw(_train(timestep_sampling="style", style_snr_mean=0.0))
    assert lower.float().median() < t.float().median()
    ranged = _draw(_train(timestep_sampling="style", min_timestep=100, max_timestep=800))
    assert ranged.min() >= 100 and ranged.max() < 800
    assert torch.equal(_draw(_train(timestep_sampling="style"), seed=5), _draw(_train(timestep_sampling="style"), seed=5))


def test_huber_is_quadratic_for_small_errors_and_linear_for_large_ones():
    t = torch.tensor([999, 999])
    huber = _train(loss="huber", huber_schedule="constant", huber_c=0.1)
    target = torch.zeros(2, 1, 2, 2)
    pred = torch.stack([torch.full((1, 2, 2), 0.01), torch.full((1, 2, 2), 10.0)])
    small, large = losses.per_image_loss(huber, pred, target, t, SD1.alphas_cumprod)
    assert small == pytest.approx(0.01**2, rel=0.01)  # 2c(√(x²+c²) − c) ≈ x² for x ≪ c
    assert large == pytest.approx(2 * 0.1 * (10 - 0.1), rel=0.01)  # ≈ 2c|x| for x ≫ c
    mse = losses.per_image_loss(_train(), pred, target, t, SD1.alphas_cumprod)
    assert mse[1] == pytest.approx(100.0)


def test_the_huber_schedules_run_from_about_mse_at_low_noise_to_c_at_high_noise():
    t = torch.tensor([0, 999])
    snr = losses.huber_c(_train(loss="huber"), SD1.alphas_cumprod, t).flatten()
    assert snr[0] > 0.9 and snr[1] == pytest.approx(0.1, abs=0.05)
    exp = losses.huber_c(_train(loss="huber", huber_schedule="exponential"), SD1.alphas_cumprod, t).flatten()
    assert exp[0] == pytest.approx(1.0) and exp[1] == pytest.approx(0.1, rel=0.01)


def test_debiased_weights_fall_with_the_signal_to_noise_ratio():
    w = losses.debiased_weights(SD1.alphas_cumprod, torch.tensor([0, 500, 999]), "epsilon")
    assert w[0] < w[1] < w[2]
    assert w[0] == pytest.approx(1 / 1000**0.5, rel=0.01)  # SNR clamped at 1000


def test_a_lowest_timestep_not_below_the_highest_names_both_settings():
    with pytest.raises(ConfigError) as err:
        config_mod.from_dict({"train": {"min_timestep": 600, "max_timestep": 400}, "model": {"base": "m"},
                              "dataset": {"path": "d"}, "output": {"dir": "o"}})
    assert "train.min_timestep is 600, not below train.max_timestep at 400" in err.value.message


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "10_tstyle", n=4)


@pytest.mark.parametrize("options", [
    {"timestep_sampling": "style", "loss": "huber"},
    {"timestep_sampling": "logit_normal", "min_timestep": 100, "max_timestep": 900, "debiased_estimation": True,
     "loss": "huber", "huber_schedule": "exponential"},
], ids=["style+huber", "logit_normal+range+debiased"])
def test_a_run_with_them_trains_and_resumes_exactly(tiny_model_dir, dataset, tmp_path, options):
    base = {"train": {"max_steps": 6, "checkpoint_every": 3, "learning_rate": 1e-3, **options}}
    straight_sink = ev.ListSink()
    assert train(tiny_config(tiny_model_dir, dataset, tmp_path / "straight", **base), straight_sink).status == "completed"
    losses_seen = [p.loss for p in straight_sink.of_type(ev.Progress)]
    assert losses_seen and all(torch.isfinite(torch.tensor(losses_seen)))
    split = tiny_config(tiny_model_dir, dataset, tmp_path / "split", **base)
    assert train(split, ev.ListSink(), ScriptedCommands({4: ["stop"]})).step == 4
    assert train(split, ev.ListSink(), resume=True).status == "completed"
    (_, a_dir), (_, b_dir) = (checkpoint.list_checkpoints(tmp_path / r)[-1] for r in ("straight", "split"))
    a, b = load_file(a_dir / "lora.safetensors"), load_file(b_dir / "lora.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if "lora_B" in k)
