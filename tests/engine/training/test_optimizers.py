"""Each optimizer trains the tiny model; the schedules have the shapes they promise; schedule-free's weights."""

from __future__ import annotations

import builtins
import math

import pytest
import torch
from engine_fixtures import make_dataset, tiny_config
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.core import optimizers as spec
from lora_studio.core.config import Config
from lora_studio.core.errors import UserError
from lora_studio.engine.training import checkpoint, optimizers
from lora_studio.engine.training.loop import train

CPU_OPTIMIZERS = ["adamw", "prodigy", "adafactor", "lion", "came", "adamw_schedulefree"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "10_tstyle", n=4)


def _run(cfg):
    sink = ev.ListSink()
    finished = train(cfg, sink)
    return finished, sink


@pytest.mark.parametrize("optimizer", CPU_OPTIMIZERS)
def test_each_optimizer_trains_and_keeps_the_state_the_estimate_counts(tiny_model_dir, dataset, tmp_path, optimizer):
    lr = 1.0 if optimizer == "prodigy" else 1e-3
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"optimizer": optimizer, "max_steps": 4, "learning_rate": lr})
    finished, sink = _run(cfg)
    assert finished.status == "completed" and finished.step == 4
    progress = sink.of_type(ev.Progress)
    assert progress and all(math.isfinite(p.loss) and p.lr > 0 for p in progress)
    _, folder = checkpoint.list_checkpoints(tmp_path / "run")[-1]
    weights = load_file(folder / "lora.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    # lora_B starts at zero: any non-zero value is the optimizer's doing.
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)
    assert not sink.of_type(ev.Warning)
    # The memory estimate's state bytes per parameter (core/optimizers), against what the optimizer really keeps.
    state = torch.load(folder / "optimizer.pt", weights_only=True)["state"]
    kept = sum(t.numel() * t.element_size() for s in state.values() for t in s.values() if torch.is_tensor(t))
    per_param = kept / sum(v.numel() for v in weights.values())
    estimated = spec.state_bytes(optimizer, cfg.network.rank)
    if optimizer == "prodigy":
        assert estimated - 4 <= per_param <= estimated  # p0 is a scalar for lora_B (zeros): 16 is the bound
    else:  # factored moments add 1/width of a float per parameter to the 1/rank counted (widths 32-64 here)
        assert per_param == pytest.approx(estimated, abs=0.3), (per_param, estimated)


def test_prodigy_with_a_usual_adamw_learning_rate_warns(tiny_model_dir, dataset, tmp_path):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"optimizer": "prodigy", "max_steps": 1, "learning_rate": 1e-4})
    _, sink = _run(cfg)
    (warning,) = sink.of_type(ev.Warning)
    assert warning.code == "optimizer_settings"
    assert warning.message.startswith("train.learning_rate is 0.0001") and "Set it to 1" in warning.message


def test_adafactor_with_relative_step_reports_its_own_learning_rate(tiny_model_dir, dataset, tmp_path):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"optimizer": "adafactor", "max_steps": 2, "learning_rate": 1e-4},
                      ).with_changes({"train.optimizer_args": {"relative_step": True}})
    finished, sink = _run(cfg)
    assert finished.status == "completed"
    # min(1e-2, 1/sqrt(step)) times the weights' RMS (scale_parameter is ours: off): 1e-2, not 1e-4.
    assert [round(p.lr, 6) for p in sink.of_type(ev.Progress)] == [0.01]
    assert "is not used" in sink.of_type(ev.Warning)[0].message


def _lrs(steps: int = 20, **train) -> list[float]:
    cfg = Config().replace(train={"max_steps": steps, "learning_rate": 1.0, **train})
    opt = optimizers.build(cfg, [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1.0}], torch.device("cpu"))
    sched = optimizers.schedule(cfg, opt)
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_schedules_have_their_shapes():
    warm = _lrs(lr_scheduler="constant_with_warmup", warmup_steps=4)
    assert warm[:5] == [0.0, 0.25, 0.5, 0.75, 1.0] and set(warm[4:]) == {1.0}
    assert set(_lrs(lr_scheduler="constant", warmup_steps=4)) == {1.0}  # constant has no warm-up, as before
    restarts = _lrs(lr_scheduler="cosine_with_restarts", lr_cycles=2)
    jumps = [i for i in range(1, 20) if restarts[i] > restarts[i - 1] + 0.5]
    assert jumps == [10] and restarts[0] == restarts[10] == 1.0 and restarts[9] < 0.05
    assert all(restarts[i] >= restarts[i + 1] for i in range(9))
    linear = _lrs(lr_scheduler="linear")
    square = _lrs(lr_scheduler="polynomial", lr_power=2.0)
    assert _lrs(lr_scheduler="polynomial", lr_power=1.0) == pytest.approx(linear, abs=1e-6)
    assert square[10] == pytest.approx(linear[10] ** 2, abs=1e-6) and square[10] < linear[10]


def test_schedule_free_ignores_the_schedule_and_warms_up_itself():
    cfg = Config().replace(train={"optimizer": "adamw_schedulefree", "warmup_steps": 5, "learning_rate": 1e-3})
    p = torch.nn.Parameter(torch.ones(3))
    opt = optimizers.build(cfg, [{"params": [p], "lr": 1e-3}], torch.device("cpu"))
    assert opt.param_groups[0]["warmup_steps"] == 5
    sched = optimizers.schedule(cfg, opt)
    optimizers.training(opt)
    reported = []
    for _ in range(10):
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
        assert sched.get_last_lr() == [1e-3]
        reported.append(optimizers.reported_lr(opt, sched))
    assert reported == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])  # its own warm-up
    y = p.detach().clone()
    with optimizers.evaluating(opt):
        x = p.detach().clone()
        with optimizers.evaluating(opt):  # nested: still the averaged weights
            assert torch.equal(p, x)
        assert torch.equal(p, x)
    assert not torch.allclose(x, y)  # the average lags the point the gradients are taken at
    assert torch.allclose(p, y, atol=1e-7) and opt.param_groups[0]["train_mode"]
    plain = optimizers.build(Config(), [{"params": [torch.nn.Parameter(torch.ones(1))], "lr": 1.0}], torch.device("cpu"))
    with optimizers.evaluating(plain):  # the others: nothing to switch
        pass


def test_a_missing_optimizer_package_says_how_to_install_it(monkeypatch):
    real = builtins.__import__

    def no_prodigy(name, *args, **kwargs):
        if name == "prodigyopt":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_prodigy)
    cfg = Config().replace(train={"optimizer": "prodigy"})
    with pytest.raises(UserError) as e:
        optimizers.build(cfg, [{"params": [torch.nn.Parameter(torch.ones(1))], "lr": 1.0}], torch.device("cpu"))
    assert e.value.code == "missing_optimizer_package" and "pip install prodigyopt" in e.value.hint
