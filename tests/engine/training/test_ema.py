"""train.ema: a moving average of the LoRA weights (diffusers' EMAModel over the LoRA parameters only) that
samples, validation, checkpoints and exports use, while training goes on from its own weights."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import make_dataset, tiny_config
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.engine.training import checkpoint
from lora_studio.engine.training.ema import LoraEMA
from lora_studio.engine.training.loop import train


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(3, 4, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]


def _walk(params, ema, steps=5):
    for i in range(steps):
        with torch.no_grad():
            for p in params:
                p.add_(0.1 * (i + 1))
        ema.step()


@pytest.mark.parametrize("on_cpu", [False, True])
def test_the_average_follows_diffusers_decay_and_swaps_in_and_out_exactly(on_cpu):
    params = _params()
    start = [p.detach().clone() for p in params]
    ema = LoraEMA(params, 0.9, on_cpu=on_cpu)
    _walk(params, ema)
    # By hand: s ← s − (1 − d)(s − p), d = min(0.9, (1 + n) / (10 + n)) at EMAModel's step n (0 at the first).
    expected = [s.clone() for s in start]
    for n in range(1, 6):
        d = 0.0 if n - 1 <= 0 else min(0.9, n / (9 + n))
        for e, s0 in zip(expected, start):
            e.sub_((1 - d) * (e - (s0 + 0.1 * n * (n + 1) / 2)))
    raw = [p.detach().clone() for p in params]
    with ema.judged():
        with ema.judged():  # nested (finish() wraps save()): one swap
            assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(params, expected))
            state = ema.state()
        assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(params, expected))
    assert all(torch.equal(p, r) for p, r in zip(params, raw))  # training goes on from its own weights
    assert all(torch.equal(t, r) for t, r in zip(state["training_params"], raw))

    fresh = _params(seed=1)
    again = LoraEMA(fresh, 0.9, on_cpu=on_cpu)
    again.load(state)
    assert all(torch.equal(p, r) for p, r in zip(fresh, raw))
    _walk(params, ema, 2)
    _walk(fresh, again, 2)
    with ema.judged(), again.judged():
        assert all(torch.equal(a, b) for a, b in zip(params, fresh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "4_tstyle", n=4)


def test_checkpoints_and_exports_hold_the_average_and_training_is_unchanged(tiny_model_dir, dataset, tmp_path):
    # Two micro-batches a step: the average moves once per optimizer step, not per micro-batch.
    common = {"max_steps": 6, "checkpoint_every": 3, "learning_rate": 5e-3, "batch_size": 1, "gradient_accumulation": 2}
    plain = tiny_config(tiny_model_dir, dataset, tmp_path / "plain", train=common)
    averaged = tiny_config(tiny_model_dir, dataset, tmp_path / "ema", train={**common, "ema": True, "ema_decay": 0.9})
    train(plain, ev.ListSink())
    sink = ev.ListSink()
    assert train(averaged, sink).status == "completed"

    step, folder = checkpoint.list_checkpoints(tmp_path / "ema")[-1]
    saved = checkpoint.load(folder)
    assert step == 6 and saved.state["ema"] is True and saved.ema["ema"]["optimization_step"] == 6
    _, plain_folder = checkpoint.list_checkpoints(tmp_path / "plain")[-1]
    plain_lora = load_file(plain_folder / checkpoint.LORA)
    # The weights training went on from are a plain run's: the average never feeds back into the steps.
    for t in saved.ema["training_params"]:
        assert any(v.shape == t.shape and torch.allclose(v, t, atol=1e-6) for v in plain_lora.values())
    # The checkpoint's LoRA file is the average, not the training weights.
    shadows = saved.ema["ema"]["shadow_params"]
    for name, v in saved.lora.items():
        assert any(s.shape == v.shape and torch.equal(s, v) for s in shadows), name
    moved = [k for k in saved.lora if "lora_B" in k and not torch.equal(saved.lora[k], plain_lora[k])]
    assert moved
    exported = sink.of_type(ev.Exported)[0]
    assert exported.verified, exported.problems

    # ema.pt is in the manifest: a damaged one is found, and the run resumes from the checkpoint before.
    (folder / checkpoint.EMA).write_bytes(b"\0" * (folder / checkpoint.EMA).stat().st_size)
    with pytest.raises(checkpoint.DamagedCheckpoint) as e:
        checkpoint.load(folder)
    assert "its EMA file (ema.pt)" in e.value.message
    assert checkpoint.newest_intact(tmp_path / "ema").step == 3
    assert checkpoint.load(folder, weights_only=True).lora.keys() == saved.lora.keys()  # an export needs no ema.pt
