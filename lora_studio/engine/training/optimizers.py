"""Building the optimizer a run asks for (train.optimizer, with [train.optimizer_args]), and its schedule.

What each optimizer is, which arguments it takes and how much memory it keeps is core/optimizers.py's;
here are only the classes and the calls. The libraries are imported when chosen, so a run with AdamW
never pays for them, and a missing one is an error that says how to install it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffusers.optimization import get_scheduler

from lora_studio.core import optimizers as spec
from lora_studio.core.config import Config
from lora_studio.core.errors import UserError


def _import(optimizer: str, module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        o = spec.OPTIMIZERS[optimizer]
        if o.package == "bitsandbytes":
            hint = (f"Install it with pip install \"lora-studio[bnb]\" (bitsandbytes 0.50 or newer, which also runs "
                    f"on the CPU), or set train.optimizer = \"{optimizer.removesuffix('8bit')}\".")
        else:
            hint = f"Install it with pip install {o.package}, or set train.optimizer = \"adamw\"."
        code = "missing_bitsandbytes" if o.package == "bitsandbytes" else "missing_optimizer_package"
        raise UserError(f"train.optimizer is \"{optimizer}\" but {o.package} is not installed.", hint=hint, code=code) from None


def build(cfg: Config, groups: list[dict], device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over `groups` (each with its own "lr"), with train.weight_decay and the arguments."""
    t = cfg.train
    name, wd = t.optimizer, t.weight_decay
    kw = spec.arguments(name, t.optimizer_args)
    if name == "adamw":
        # Fused AdamW: one kernel for all parameters on CUDA.
        return torch.optim.AdamW(groups, weight_decay=wd, fused=device.type == "cuda", **kw)
    if name in ("adamw8bit", "lion8bit"):
        bnb = _import(name, "bitsandbytes")
        cls = bnb.optim.AdamW8bit if name == "adamw8bit" else bnb.optim.Lion8bit
        return cls(groups, weight_decay=wd, **kw)
    if name == "prodigy":
        return _import(name, "prodigyopt").Prodigy(groups, weight_decay=wd, **kw)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        if kw.get("relative_step"):
            # Adafactor's own step size (min(1e-2, 1/√step), × the weights' RMS with scale_parameter): it refuses
            # a learning rate beside it. The groups keep theirs, which it ignores (the reported lr is its own).
            return Adafactor(groups, lr=None, weight_decay=wd, **kw)
        return Adafactor(groups, lr=t.learning_rate, weight_decay=wd, **kw)
    if name == "lion":
        return _import(name, "pytorch_optimizer").Lion(groups, weight_decay=wd, **kw)
    if name == "came":
        return _import(name, "pytorch_optimizer").CAME(groups, weight_decay=wd, **kw)
    if name == "adamw_schedulefree":
        # Schedule-free (Defazio et al. 2024, "The Road Less Scheduled"): its warm-up is its own argument, and
        # the LR schedule stays constant (config validation allows no other).
        return _import(name, "schedulefree").AdamWScheduleFree(groups, weight_decay=wd, warmup_steps=t.warmup_steps, **kw)
    raise ValueError(f"unknown optimizer {name!r}")  # config validation lists the choices first


def schedule(cfg: Config, optimizer: torch.optim.Optimizer):
    """The LR schedule (diffusers' get_scheduler), stepped once per optimizer step."""
    t = cfg.train
    name, warmup = t.lr_scheduler, t.warmup_steps
    if spec.OPTIMIZERS[t.optimizer].schedule_free:
        name, warmup = "constant", 0  # the optimizer warms up itself (build); a second warm-up would square it
    elif spec.relative_step(t.optimizer, t.optimizer_args):
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer)  # reports the learning rate Adafactor picks
    if name == "polynomial":
        return _polynomial(optimizer, warmup, t.max_steps, t.lr_power)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=t.max_steps, num_cycles=t.lr_cycles)


def _polynomial(optimizer: torch.optim.Optimizer, warmup: int, total: int, power: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then (1 - progress)^power down to 0, as a factor of each group's own learning rate.
    Not diffusers' polynomial schedule: that ends at lr_end relative to optimizer.defaults["lr"], the class's
    default rather than the rates our parameter groups carry (Adafactor's is None), so its curve would
    depend on the optimizer chosen."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        remaining = max(0.0, (total - step) / max(1, total - warmup))
        return remaining**power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def reported_lr(optimizer: torch.optim.Optimizer, scheduler) -> float:
    """The learning rate the progress events show: the step size the optimizer takes. For Prodigy that is
    d × lr (d is the rate it has found; lr only scales it), for schedule-free AdamW the rate after its own
    warm-up, for the others the schedule's."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    group = inner.param_groups[0]
    if "d" in group and "d0" in group:  # Prodigy
        return float(group["d"] * group["lr"])
    if "scheduled_lr" in group and group.get("k", 0) > 0:  # schedule-free, once it has stepped
        return float(group["scheduled_lr"])
    return float(scheduler.get_last_lr()[0])


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    inner = getattr(optimizer, "optimizer", optimizer)
    return bool(inner.param_groups) and "train_mode" in inner.param_groups[0]


def training(optimizer: torch.optim.Optimizer) -> None:
    """Back to taking steps: a schedule-free optimizer built, or just loaded from a checkpoint (saved in eval
    mode), holds its averaged weights until told to train."""
    if is_schedule_free(optimizer):
        getattr(optimizer, "optimizer", optimizer).train()


@contextlib.contextmanager
def evaluating(optimizer: torch.optim.Optimizer | None) -> Iterator[None]:
    """The weights a schedule-free optimizer is judged by: inside, the LoRA holds its averaged weights (x)
    rather than the point it takes gradients at (y). Around sampling, the validation loss, saving a
    checkpoint (which the export and a resume read) and the end of the run; nothing for other optimizers.
    Nested uses switch once."""
    if optimizer is None or not is_schedule_free(optimizer):
        yield
        return
    inner = getattr(optimizer, "optimizer", optimizer)
    was_training = inner.param_groups[0]["train_mode"]
    inner.eval()
    try:
        yield
    finally:
        if was_training:
            inner.train()
