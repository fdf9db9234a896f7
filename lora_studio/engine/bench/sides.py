"""The two sides of the benchmark and how they are timed.

Side "lora_studio" (`OursSide`): `engine.training.step.Trainer` on one copy of the models. The batches go through
`encode_batch` once (the engine caches latents and text-encoder outputs), the VAE and text encoders then leave
the GPU, as `engine.training.loop` does, and each timed step is `Trainer.train_step(cached_batch)`.
Side "reference" (`ReferenceSide`): `engine.bench.reference.ReferenceLoop` on the other copy: VAE and text encoders
every step, the loss read back every step, as diffusers' `train_text_to_image_lora.py` does.

`alternate` times `steps` steps per side in chunks, alternating ABBA (ours, ref, ref, ours, ...), so clock
boosts, thermals and caches hit both sides alike. On CUDA the per-step times come from CUDA events (no sync
inside a chunk), on a CPU from `time.perf_counter`. Used by `engine.bench.bench`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch
from torch.nn.utils import parametrize

from lora_studio.core.config import Config
from lora_studio.engine.bench.measure import LiveTensorBytes, sync

# -- the two sides ----------------------------------------------------------------------------------


def _lora_settings(unet: torch.nn.Module) -> dict:
    ranks, scalings, dtypes, count, trainable = set(), set(), set(), 0, 0
    for _name, m in unet.named_modules():
        if hasattr(m, "lora_A") and hasattr(m, "scaling") and len(getattr(m, "lora_A", {})):
            count += 1
            for a in m.lora_A.values():
                ranks.add(int(a.weight.shape[0]))
                dtypes.add(str(a.weight.dtype).removeprefix("torch."))
            scalings.update(float(s) for s in m.scaling.values())
    trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    conv_in = unet.conv_in  # its stored dtype: an fp8-stored weight reads as the compute dtype (engine/training/fp8.py)
    base = conv_in.parametrizations.weight.original.dtype if parametrize.is_parametrized(conv_in, "weight") else conv_in.weight.dtype
    return {
        "lora_modules": count, "rank": sorted(ranks), "lora_scaling": sorted(scalings), "lora_dtype": sorted(dtypes),
        "trainable_params": trainable, "base_dtype": str(base).removeprefix("torch."),
        "gradient_checkpointing": bool(getattr(unet, "is_gradient_checkpointing", False)),
    }


def _optimizer_settings(optimizer) -> dict:
    inner = getattr(optimizer, "optimizer", optimizer)
    g = inner.param_groups[0]
    return {"optimizer": type(inner).__name__, "learning_rate": g["lr"], "weight_decay": g["weight_decay"],
            "betas": list(g["betas"]), "eps": g["eps"]}


class Side:
    """One side of the comparison: `step()` trains one step; `flush()` ends a timed chunk."""

    name: str
    device: torch.device
    batch_size: int
    resolution: int

    def step(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        sync(self.device)

    def settings(self) -> dict:
        raise NotImplementedError


class OursSide(Side):
    name = "lora_studio"

    def __init__(self, models, cfg: Config, accelerator, inputs: list[tuple]):
        from lora_studio.engine.training.step import Trainer

        self.device = accelerator.device
        self.accelerator = accelerator
        self.trainer = Trainer(models, cfg, accelerator)
        g = torch.Generator().manual_seed(0)
        self.batches = [self.trainer.encode_batch(px, caps, sizes, crops, generator=g) for px, caps, sizes, crops in inputs]
        self.batch_size, self.resolution = inputs[0][0].shape[0], inputs[0][0].shape[-1]
        self.trainer.offload_encoders(vae=True, text=True)  # as engine.training.loop does after caching
        self.i = 0
        self.last: torch.Tensor | None = None

    def step(self) -> None:
        self.last = self.trainer.train_step(self.batches[self.i % len(self.batches)])
        self.i += 1

    def flush(self) -> None:
        # The training loop reads the loss back every log_every steps; a chunk ends with one read-back.
        if self.last is not None:
            float(self.last)
        sync(self.device)

    def settings(self) -> dict:
        t = self.trainer
        return {**_lora_settings(t.models.unet), **_optimizer_settings(t.optimizer),
                "mixed_precision": self.accelerator.mixed_precision, "batch_size": self.batch_size, "resolution": self.resolution}


class ReferenceSide(Side):
    name = "reference"

    def __init__(self, models, cfg: Config, accelerator, inputs: list[tuple]):
        from lora_studio.engine.bench.reference import ReferenceLoop

        self.device = accelerator.device
        self.accelerator = accelerator
        self.loop = ReferenceLoop(models, cfg, accelerator)
        self.batches = [self.loop.prepare_batch(*inp) for inp in inputs]
        self.batch_size, self.resolution = inputs[0][0].shape[0], inputs[0][0].shape[-1]
        self.i = 0

    def step(self) -> None:
        self.loop.train_step(self.batches[self.i % len(self.batches)])
        self.i += 1

    def settings(self) -> dict:
        lp = self.loop
        return {**_lora_settings(lp.models.unet), **_optimizer_settings(lp.optimizer),
                "mixed_precision": self.accelerator.mixed_precision, "batch_size": self.batch_size, "resolution": self.resolution}


# -- timing -----------------------------------------------------------------------------------------


@dataclass
class SideResult:
    steps: int = 0
    wall_s: float = 0.0
    step_times_s: list[float] = field(default_factory=list)
    resident_bytes: int = 0
    transient_peak_bytes: int = 0
    setup_peak_bytes: int = 0
    flops_per_step: int = 0
    host_syncs_per_step: int | None = None  # CUDA only: how often a step makes the host wait for the GPU
    settings: dict = field(default_factory=dict)


def time_chunk(side: Side, n: int) -> tuple[float, list[float]]:
    """Run `n` steps; (wall seconds incl. the closing read-back, per-step seconds)."""
    dev = side.device
    side.flush()
    if dev.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
        start = time.perf_counter()
        events[0].record()
        for i in range(n):
            side.step()
            events[i + 1].record()
        side.flush()
        wall = time.perf_counter() - start
        times = [events[i].elapsed_time(events[i + 1]) / 1000 for i in range(n)]
        return wall, times
    times = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        side.step()
        times.append(time.perf_counter() - t0)
    side.flush()
    return time.perf_counter() - start, times


def count_host_syncs(side: Side) -> int | None:
    """How many times one step makes the host wait for the GPU (torch's sync debug mode flags every
    synchronizing CUDA call: .item(), a blocking copy, a nonzero ...). None on a CPU."""
    if side.device.type != "cuda":
        return None
    side.flush()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            side.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    side.flush()
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def measure_transient(side: Side) -> int:
    """The largest rise of allocated memory above the step's starting point, over one step."""
    dev = side.device
    side.flush()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        side.step()
        side.flush()
        return torch.cuda.max_memory_allocated(dev) - before
    tracker = LiveTensorBytes()
    with tracker:
        side.step()
        side.flush()
    return tracker.peak


def alternate(sides: list[Side], results: dict[str, SideResult], steps: int, chunk: int, on_chunk=None) -> None:
    """ABBA alternation: round r runs the sides in order, round r+1 in reverse, `chunk` steps each."""
    done = {s.name: 0 for s in sides}
    r = 0
    while any(done[s.name] < steps for s in sides):
        order = sides if r % 2 == 0 else list(reversed(sides))
        for side in order:
            n = min(chunk, steps - done[side.name])
            if n <= 0:
                continue
            if side.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(side.device)
                before = torch.cuda.memory_allocated(side.device)
            wall, times = time_chunk(side, n)
            res = results[side.name]
            if side.device.type == "cuda":
                res.transient_peak_bytes = max(res.transient_peak_bytes, torch.cuda.max_memory_allocated(side.device) - before)
            res.wall_s += wall
            res.step_times_s += times
            res.steps += n
            done[side.name] += n
            if on_chunk:
                on_chunk(side.name, done[side.name], steps)
        r += 1
