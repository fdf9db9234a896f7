"""`lora-studio bench`: our training step against diffusers' LoRA recipe, same settings, one process.

What it does (docs/performance.md has the long form):

1. Builds the architecture of the preset twice with the same seeded random weights (speed and memory do not
   depend on the values): the tiny models of `engine.tiny`, or SD1.5 / SDXL from the configs shipped in
   `resources/models/` (built on the meta device, materialized on the target device, cheaply initialized).
2. Side "lora_studio": `engine.trainer.Trainer` on one copy. The batches go through `encode_batch` once (the
   engine caches latents and text-encoder outputs), the VAE and text encoders then leave the GPU, as
   `engine.train` does, and each timed step is `Trainer.train_step(cached_batch)`.
   Side "reference": `engine.reference.ReferenceLoop` on the other copy: VAE and text encoders every step,
   the loss read back every step, as diffusers' `train_text_to_image_lora.py` does.
3. Counts each side's FLOPs per step with `torch.utils.flop_counter.FlopCounterMode`, and measures each
   side's memory (resident + the transient peak of one step), then warms both up.
4. Times `steps` steps per side in chunks, alternating ABBA (ours, ref, ref, ours, ...), so clock boosts,
   thermals and caches hit both sides alike. On CUDA the per-step times come from CUDA events (no sync
   inside a chunk), on a CPU from `time.perf_counter`.
5. Reports samples/s, median step time, peak memory, FLOPs per step and, against the matmul rate measured
   on the same device in the same run, MFU.

`calibrate` (`python -m lora_studio.engine.bench calibrate`) simulates the peak memory of our training step
for the full-size architectures under `FakeTensorMode` (shapes only, no memory, no compute) and prints the
table the fit estimate (`lora_studio.core.fit`) was calibrated from.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from lora_studio.core.config import Config
from lora_studio.core.errors import UserError

# -- presets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # sd1 | sd2 | sdxl
    size: str  # tiny | full
    resolution: int
    batch_size: int
    rank: int
    steps: int  # timed steps per side
    warmup: int  # untimed steps per side before timing
    chunk: int  # steps per side before switching to the other side
    gradient_checkpointing: bool
    base_weights: str  # "auto": the mixed-precision dtype (bf16 on a GPU), fp32 on a CPU
    learning_rate: float = 1e-4


PRESETS = {
    "tiny": Preset("tiny", "sd1", "tiny", 64, 4, 16, steps=60, warmup=3, chunk=5, gradient_checkpointing=False, base_weights="auto"),
    "sd15-512": Preset("sd15-512", "sd1", "full", 512, 1, 16, steps=30, warmup=3, chunk=5, gradient_checkpointing=False, base_weights="auto"),
    # SDXL at 1024 px needs gradient checkpointing to fit the 8 GB target (see docs/performance.md).
    "sdxl-1024": Preset("sdxl-1024", "sdxl", "full", 1024, 1, 16, steps=20, warmup=3, chunk=5, gradient_checkpointing=True, base_weights="bf16"),
}

CAPTION_WORDS = ("a painting of", "a watercolor of", "an ink drawing of", "a photo of")
CAPTION_THINGS = ("a lighthouse at dusk", "two cats on a sofa", "a mountain village", "a bowl of lemons")


# -- building the models ----------------------------------------------------------------------------


def _cheap_init_(module: torch.nn.Module, seed: int) -> None:
    """Finite, well-scaled values fast: weights U(±√3/√fan_in) (unit-variance activations), norms 1, biases 0.

    On a GPU `uniform_` is instant. On a CPU it runs at ~50 M values/s, a minute for SDXL, so one seeded block
    of random values is tiled instead (an odd length, so rows of a matrix do not repeat in step)."""
    g = torch.Generator().manual_seed(seed)
    block = (torch.rand(1_000_003, generator=g) * 2 - 1) * math.sqrt(3.0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                scale = 1.0 / math.sqrt(max(p[0].numel(), 1))
                if p.device.type == "cuda":
                    p.uniform_(-math.sqrt(3.0) * scale, math.sqrt(3.0) * scale)
                else:
                    flat = p.view(-1)
                    src = block.to(p.dtype)
                    for start in range(0, flat.numel(), src.numel()):
                        n = min(src.numel(), flat.numel() - start)
                        flat[start : start + n].copy_(src[:n]).mul_(scale)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        for name, b in module.named_buffers():
            if name.endswith("position_ids"):
                b.copy_(torch.arange(b.numel(), device=b.device).view(b.shape))


def build_models(kind: str, size: str, device: torch.device, dtype: torch.dtype, *, prediction: str = "epsilon", seed: int = 0):
    """A `Models` with seeded random weights: frozen UNet and text encoders in `dtype`, the VAE in fp32."""
    from lora_studio.engine import models as models_mod
    from lora_studio.engine import tiny

    if size == "tiny":
        parts = tiny.build(kind, prediction, seed)
        unet, vae = parts["unet"], parts["vae"]
        tes = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if kind == "sdxl" else [])
        toks = [parts["tokenizer"]] + ([parts["tokenizer_2"]] if kind == "sdxl" else [])
        sched = dict(parts["scheduler"].config)
        name = f"tiny-{kind} (random)"
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        cfg_dir = models_mod.shipped_config(kind, prediction)
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg_dir / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg_dir / "vae"))
            tes = [CLIPTextModel(CLIPTextConfig.from_pretrained(cfg_dir / "text_encoder"))]
            if kind == "sdxl":
                tes.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg_dir / "text_encoder_2")))
        # Cast on the meta device, then materialize: the GPU never holds an fp32 copy of a bf16 model.
        unet.to(dtype)
        for te in tes:
            te.to(dtype)
        for i, m in enumerate((unet, vae, *tes)):
            m.to_empty(device=device)
            _cheap_init_(m, seed + i)
        toks = [models_mod.tokenizer_for(kind)] + ([models_mod.tokenizer_for(kind, second=True)] if kind == "sdxl" else [])
        sched = models_mod.scheduler_config_for(cfg_dir, prediction)
        name = f"{kind} {cfg_dir.name} (random weights)"
    sched["prediction_type"] = "v_prediction" if prediction == "v" else "epsilon"
    unet.to(device, dtype=dtype)
    vae.to(device, dtype=torch.float32)
    for te in tes:
        te.to(device, dtype=dtype)
    for m in (unet, vae, *tes):
        m.requires_grad_(False)
        m.eval()
    return models_mod.Models(kind, prediction, unet, vae, tes, toks, sched, name, [f"{name}: benchmark model"])


def bench_config(preset: Preset, *, batch_size: int, mixed_precision: str, base_weights: str) -> Config:
    """The settings both sides train with (the benchmark's `settings`)."""
    return Config().replace(
        model={"kind": preset.kind, "prediction": "epsilon"},
        network={"rank": preset.rank, "alpha": float(preset.rank), "targets": "attention", "train_text_encoder": False, "dropout": 0.0},
        train={
            "batch_size": batch_size, "resolution": preset.resolution, "learning_rate": preset.learning_rate,
            "lr_scheduler": "constant", "warmup_steps": 0, "optimizer": "adamw", "weight_decay": 1e-2, "max_grad_norm": 1.0,
            "mixed_precision": mixed_precision, "base_weights": base_weights,
            "gradient_checkpointing": preset.gradient_checkpointing, "cache_latents": True, "cache_text_encoder": True,
            "noise_offset": 0.0, "min_snr_gamma": 0.0, "max_steps": 1_000_000, "gradient_accumulation": 1, "compile": False, "seed": 0,
        },
    )


def make_inputs(n_batches: int, batch_size: int, resolution: int, seed: int = 0) -> list[tuple]:
    """Random 'images' in [-1, 1] and captions: (pixel_values [B,3,H,W], captions, original sizes, crop top-lefts)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        px = torch.rand(batch_size, 3, resolution, resolution, generator=g) * 2 - 1
        caps = [f"{CAPTION_WORDS[(b + i) % 4]} {CAPTION_THINGS[(b * 3 + i) % 4]}, in the style of zkw" for i in range(batch_size)]
        out.append((px, caps, [(resolution, resolution)] * batch_size, [(0, 0)] * batch_size))
    return out


# -- FLOPs ------------------------------------------------------------------------------------------


def _flop_mapping() -> dict:
    """FlopCounterMode knows the CUDA attention kernels; add the CPU flash-attention pair (same math)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    mapping = {}
    for op, cuda_op in (("_scaled_dot_product_flash_attention_for_cpu", aten._scaled_dot_product_flash_attention),
                        ("_scaled_dot_product_flash_attention_for_cpu_backward", aten._scaled_dot_product_flash_attention_backward)):
        registered = fc.flop_registry.get(cuda_op)
        if registered is None or not hasattr(aten, op):
            continue

        def formula(*args, _f=registered, **kwargs):
            return _f(*args, **kwargs)

        formula._get_raw = True  # `registered` already turns tensors into shapes
        mapping[getattr(aten, op)] = formula
    return mapping


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (forward and backward matmuls, convolutions and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_rate(device: torch.device, dtype: torch.dtype, *, size: int | None = None, seconds: float = 0.5) -> dict:
    """The dense matmul rate of this device in this dtype (FLOP/s), timed on a square matmul."""
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    iters, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < seconds or iters < 5:
        a @ b
        iters += 1
        if iters % 5 == 0:
            _sync(device)
            elapsed = time.perf_counter() - start
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"flops_per_s": 2 * n**3 * iters / elapsed, "dtype": str(dtype).removeprefix("torch."), "size": n, "iterations": iters}


# -- memory -----------------------------------------------------------------------------------------


class LiveTensorBytes:
    """A dispatch mode that keeps a running total of the bytes of tensor storages created under it (freed
    ones subtracted when their storage dies) and its peak: the CPU's (and fake tensors') counterpart of
    `torch.cuda.max_memory_allocated`. `track()` adds tensors that already exist (weights, inputs)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._track_tree(out)
                return out

        self.mode = _Mode()
        self.live: dict[int, Any] = {}
        self.current = 0
        self.peak = 0

    def _track_tree(self, out) -> None:
        from torch.utils._pytree import tree_flatten

        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)

    def track(self, t: torch.Tensor) -> None:
        if t.is_meta:  # shapes only: no memory (the simulation's fake tensors are not meta)
            return
        st = t.untyped_storage()
        key = id(st)
        if key in self.live:
            return
        n = st.nbytes()

        def gone(_ref, key=key, n=n):
            if self.live.pop(key, None) is not None:
                self.current -= n

        self.live[key] = weakref.ref(st, gone)
        self.current += n
        self.peak = max(self.peak, self.current)

    def reset_peak(self) -> None:
        self.peak = self.current

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def live_tensor_bytes() -> int:
    """Bytes of all tensor storages reachable by the garbage collector (the CPU's memory_allocated)."""
    seen, total = set(), 0
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance reads __class__, which some deprecated proxies warn about.
        if issubclass(type(obj), torch.Tensor) and not obj.is_meta and obj.device.type == "cpu":
            try:
                st = obj.untyped_storage()
            except Exception:  # noqa: BLE001 - sparse or exotic tensors
                continue
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
    return total


def allocated_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device)
    gc.collect()
    return live_tensor_bytes()


def process_peak_rss() -> int:
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset


# -- the two sides ----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    base = unet.conv_in.weight.dtype
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
        _sync(self.device)

    def settings(self) -> dict:
        raise NotImplementedError


class OursSide(Side):
    name = "lora_studio"

    def __init__(self, models, cfg: Config, accelerator, inputs: list[tuple]):
        from lora_studio.engine.trainer import Trainer

        self.device = accelerator.device
        self.accelerator = accelerator
        self.trainer = Trainer(models, cfg, accelerator)
        g = torch.Generator().manual_seed(0)
        self.batches = [self.trainer.encode_batch(px, caps, sizes, crops, generator=g) for px, caps, sizes, crops in inputs]
        self.batch_size, self.resolution = inputs[0][0].shape[0], inputs[0][0].shape[-1]
        if self.device.type == "cuda":
            # What engine.train does after caching: what the steps no longer use leaves the GPU.
            models.vae.to("cpu")
            for te in models.text_encoders:
                te.to("cpu")
            torch.cuda.empty_cache()
        self.i = 0
        self.last: torch.Tensor | None = None

    def step(self) -> None:
        self.last = self.trainer.train_step(self.batches[self.i % len(self.batches)])
        self.i += 1

    def flush(self) -> None:
        # The training loop reads the loss back every log_every steps; a chunk ends with one read-back.
        if self.last is not None:
            float(self.last)
        _sync(self.device)

    def settings(self) -> dict:
        t = self.trainer
        return {**_lora_settings(t.models.unet), **_optimizer_settings(t.optimizer),
                "mixed_precision": self.accelerator.mixed_precision, "batch_size": self.batch_size, "resolution": self.resolution}


class ReferenceSide(Side):
    name = "reference"

    def __init__(self, models, cfg: Config, accelerator, inputs: list[tuple]):
        from lora_studio.engine.reference import ReferenceLoop

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


# -- the command ------------------------------------------------------------------------------------


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def _versions() -> dict:
    import accelerate
    import diffusers
    import peft
    import transformers

    import lora_studio

    return {
        "lora_studio": getattr(lora_studio, "__version__", "0.1.0"), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "accelerate": accelerate.__version__, "platform": platform.platform(),
    }


def choose_cpu_threads(sides: list["Side"], log: Callable[[str], None]) -> tuple[int, dict]:
    """The CPU thread count to time with: LORA_STUDIO_BENCH_THREADS, else the fastest for these very steps.

    torch uses one thread per core it sees, but a virtual machine's cores may not all run at once: on the
    2-vCPU machine of docs/performance.md two busy processes each get about half a core, and a tiny model's
    step takes ~100 times longer with two threads (every OpenMP region waits for a descheduled thread) than
    with one. So each candidate count runs one untimed and two timed steps of both sides, and the fastest
    total wins. Both sides are then timed with it."""
    default = torch.get_num_threads()
    env = os.environ.get("LORA_STUDIO_BENCH_THREADS")
    if env:
        n = max(1, int(env))
        torch.set_num_threads(n)
        return n, {"chosen_by": "LORA_STUDIO_BENCH_THREADS", "default": default}
    candidates = sorted({1, max(1, default // 2), default})
    if len(candidates) == 1:
        return default, {"chosen_by": "default", "default": default}
    totals = {}
    for n in candidates:
        torch.set_num_threads(n)
        total = 0.0
        for side in sides:
            side.step()
            side.flush()
            t0 = time.perf_counter()
            for _ in range(2):
                side.step()
            side.flush()
            total += time.perf_counter() - t0
        totals[n] = total
    best = min(totals, key=totals.get)
    torch.set_num_threads(best)
    log(f"  CPU threads: {best} (two steps of each side took " + ", ".join(f"{t:.2f} s with {n}" for n, t in totals.items()) + ")")
    return best, {"chosen_by": "fastest for two steps of each side", "default": default,
                  "seconds_for_two_steps_of_each_side": {str(n): round(t, 4) for n, t in totals.items()}}


def _mixed_precision(device: torch.device) -> str:
    if device.type != "cuda":
        return "no"  # CPU autocast is slower than fp32
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _side_block(res: SideResult, batch: int, peak_rate: float | None) -> dict:
    median = statistics.median(res.step_times_s)
    sps = batch * res.steps / res.wall_s
    q = statistics.quantiles(res.step_times_s, n=10) if len(res.step_times_s) >= 2 else [median] * 9
    achieved = res.flops_per_step / median if median > 0 else 0.0
    return {
        "samples_per_s": sps,
        "steps": res.steps,
        "wall_s": res.wall_s,
        "median_step_s": median,
        "p10_step_s": q[0],
        "p90_step_s": q[-1],
        "peak_memory_bytes": max(res.resident_bytes + res.transient_peak_bytes, res.setup_peak_bytes),
        "resident_bytes": res.resident_bytes,
        "transient_peak_bytes": res.transient_peak_bytes,
        "setup_peak_bytes": res.setup_peak_bytes,
        "flops_per_step": res.flops_per_step,
        "achieved_flops_per_s": achieved,
        "mfu": (achieved / peak_rate) if peak_rate else None,
        "settings": res.settings,
    }


SETTING_KEYS_THAT_MUST_MATCH = (
    "lora_modules", "rank", "lora_scaling", "lora_dtype", "trainable_params", "base_dtype", "gradient_checkpointing",
    "optimizer", "learning_rate", "weight_decay", "betas", "eps", "mixed_precision", "batch_size", "resolution",
)


@contextlib.contextmanager
def _quiet_diffusers():
    # diffusers warns on every `.to(dtype)` of a model built from a config; the benchmark casts on purpose.
    from diffusers.utils import logging as diffusers_logging

    before = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(before)


def run_bench(preset_name: str, *, steps: int | None = None, batch_size: int | None = None, device: str | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Run the benchmark in this process and return the results (the JSON document)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads_before = torch.get_num_threads()
    try:
        with _quiet_diffusers():
            return _run_bench(preset_name, steps=steps, batch_size=batch_size, device=dev, log=log)
    finally:
        torch.set_num_threads(threads_before)


def _run_bench(preset_name: str, *, steps: int | None, batch_size: int | None, device: torch.device, log: Callable[[str], None]) -> dict:
    from accelerate import Accelerator

    if preset_name not in PRESETS:
        raise UserError(f"There is no benchmark preset {preset_name!r}.", hint=f"Use one of {', '.join(PRESETS)}.", code="bad_preset")
    preset = PRESETS[preset_name]
    dev = device
    if preset.size == "full" and dev.type != "cuda" and not os.environ.get("LORA_STUDIO_BENCH_CPU"):
        raise UserError(
            f"The {preset_name} preset builds the full-size model and needs an NVIDIA GPU; this machine has none.",
            hint="Run `lora-studio bench --preset tiny` on a CPU (or set LORA_STUDIO_BENCH_CPU=1 to insist: slow, and it needs ~24 GB of RAM).",
            code="no_gpu",
        )
    steps = steps or preset.steps
    batch = batch_size or preset.batch_size
    if steps < 1 or batch < 1:
        raise UserError("--steps and --batch-size must be at least 1.", code="bad_argument")
    began = time.perf_counter()
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    mixed = _mixed_precision(dev)
    base = preset.base_weights if preset.base_weights != "auto" else {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[mixed]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[base]
    cfg = bench_config(preset, batch_size=batch, mixed_precision=mixed, base_weights=base)
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)
    log(f"bench {preset_name}: {preset.kind} ({preset.size}), {preset.resolution} px, batch {batch}, rank {preset.rank}, "
        f"{mixed if mixed != 'no' else 'fp32'}, {steps} timed steps per side, on {_device_description(dev)}")

    inputs = make_inputs(4, batch, preset.resolution)
    results = {"lora_studio": SideResult(), "reference": SideResult()}

    def accelerator() -> Accelerator:
        return Accelerator(mixed_precision=mixed, cpu=dev.type != "cuda")

    sides: list[Side] = []
    for name, cls in (("lora_studio", OursSide), ("reference", ReferenceSide)):
        log(f"  building {name}")
        torch.manual_seed(0)
        before = allocated_bytes(dev)
        # The setup peak: building the models, placing them and (ours) encoding the batches once.
        tracker = LiveTensorBytes() if dev.type != "cuda" else contextlib.nullcontext()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        with tracker:
            models = build_models(preset.kind, preset.size, dev, dtype, seed=0)
            side = cls(models, cfg, accelerator(), inputs)
            side.flush()
        del models
        results[name].setup_peak_bytes = (torch.cuda.max_memory_allocated(dev) - before) if dev.type == "cuda" else tracker.peak
        for _ in range(preset.warmup):
            side.step()
        side.flush()
        results[name].resident_bytes = max(allocated_bytes(dev) - before, 0)
        sides.append(side)

    threads, threads_how = (choose_cpu_threads(sides, log) if dev.type == "cpu"
                            else (torch.get_num_threads(), {"chosen_by": "default (GPU run)"}))
    for side in sides:
        res = results[side.name]
        res.settings = side.settings()
        res.flops_per_step = count_flops(side.step)
        res.transient_peak_bytes = measure_transient(side)
        log(f"  {side.name}: {res.flops_per_step / 1e9:.2f} GFLOP per step, resident {res.resident_bytes / 2**20:.0f} MiB, "
            f"transient peak {res.transient_peak_bytes / 2**20:.0f} MiB")
    mismatched = {k: (results["lora_studio"].settings.get(k), results["reference"].settings.get(k))
                  for k in SETTING_KEYS_THAT_MUST_MATCH if results["lora_studio"].settings.get(k) != results["reference"].settings.get(k)}
    for side in sides:  # a second warm-up right before timing, alternating
        for _ in range(preset.warmup):
            side.step()
        side.flush()

    alternate(sides, results, steps, preset.chunk,
              on_chunk=lambda name, done, total: log(f"  {name}: {done}/{total} steps") if done == total else None)

    # Warm-up, thread choice, FLOP count and memory step: the same number on both sides.
    untimed = {side.name: side.i - results[side.name].steps for side in sides}
    untimed = untimed["lora_studio"] if len(set(untimed.values())) == 1 else untimed
    # Measured last: on a CPU a big multithreaded matmul can leave its threads spinning into what follows.
    peak = matmul_rate(dev, compute)
    log(f"  matmul rate ({peak['dtype']}, {peak['size']}²): {peak['flops_per_s'] / 1e12:.2f} TFLOP/s")
    rate = peak["flops_per_s"]
    ours = _side_block(results["lora_studio"], batch, rate)
    ref = _side_block(results["reference"], batch, rate)
    doc = {
        "lora_studio": ours,
        "reference": ref,
        "speedup": ours["samples_per_s"] / ref["samples_per_s"],
        "device": _device_description(dev),
        "settings": {
            "preset": preset_name, "kind": preset.kind, "model_size": preset.size, "weights": "random (seeded)",
            "resolution": preset.resolution, "batch_size": batch, "rank": preset.rank, "alpha": float(preset.rank),
            "targets": "attention (to_q, to_k, to_v, to_out.0)", "learning_rate": preset.learning_rate, "optimizer": "AdamW",
            "mixed_precision": mixed, "base_weights": base, "gradient_checkpointing": preset.gradient_checkpointing,
            "timed_steps_per_side": steps, "untimed_steps_per_side": untimed, "chunk": preset.chunk,
            "alternation": "ABBA", "distinct_batches": len(inputs), "settings_match": not mismatched,
            "mismatched_settings": mismatched, "cpu_threads": threads, "cpu_threads_choice": threads_how,
        },
        "peak_matmul": peak,
        "memory_method": (
            "peak = max(resident + transient, setup peak). resident: the change in torch.cuda.memory_allocated while the side was built, "
            "cached and warmed up; transient: the largest torch.cuda.max_memory_allocated rise above the allocation at the "
            "start of a step, over one measured step and every timed chunk (after reset_peak_memory_stats). "
            "setup_peak_bytes: torch.cuda.max_memory_allocated while the side was built and placed and, for lora_studio, "
            "encoded its batches once (the caching phase, before the VAE and text encoders leave the GPU)."
            if dev.type == "cuda" else
            "peak = max(resident + transient, setup peak). resident: the change in the bytes of all live CPU tensor storages (found by the "
            "garbage collector) while the side was built, cached and warmed up; transient: the peak of the bytes of tensor "
            "storages allocated during one step and still alive, tracked op by op with a TorchDispatchMode (the CPU "
            "counterpart of torch.cuda.max_memory_allocated); setup_peak_bytes: the same tracker while the side was built "
            "and, for lora_studio, encoded its batches once. Allocator overhead and the Python heap are not included; "
            "process_peak_rss_bytes is the whole process."
        ),
        "process_peak_rss_bytes": process_peak_rss(),
        "versions": _versions(),
        "date": date,
        "wall_s": time.perf_counter() - began,
    }
    if mismatched:
        log(f"  warning: the sides' settings differ: {mismatched}")
    return doc


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def format_table(doc: dict) -> str:
    s = doc["settings"]
    lines = [
        f"LoRA Studio bench — {s['preset']}: {s['kind']} ({s['model_size']}), {s['resolution']} px, batch {s['batch_size']}, "
        f"rank {s['rank']}, {s['mixed_precision'] if s['mixed_precision'] != 'no' else 'fp32'}, "
        f"{s['timed_steps_per_side']} steps per side",
        f"on {doc['device']}",
        f"{'':<12}{'samples/s':>11}{'median step':>14}{'peak memory':>14}{'GFLOP/step':>12}{'MFU':>8}",
    ]
    for name in ("lora_studio", "reference"):
        b = doc[name]
        mfu = f"{b['mfu'] * 100:.1f}%" if b["mfu"] is not None else "—"
        lines.append(f"{name:<12}{b['samples_per_s']:>11.2f}{b['median_step_s'] * 1000:>11.1f} ms{_fmt_bytes(b['peak_memory_bytes']):>14}"
                     f"{b['flops_per_step'] / 1e9:>12.2f}{mfu:>8}")
    lines.append(f"speedup: {doc['speedup']:.2f}× (samples/s, lora_studio ÷ reference); settings match: {s['settings_match']}")
    return "\n".join(lines)


def bench_command(preset: str, *, steps: int | None = None, batch_size: int | None = None, json_path: Path | None = None) -> int:
    doc = run_bench(preset, steps=steps, batch_size=batch_size)
    print(format_table(doc))
    if json_path is not None:
        from lora_studio.core.atomic import atomic_write_text

        atomic_write_text(Path(json_path), json.dumps(doc, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0


# -- memory calibration of the fit estimate (shapes only) --------------------------------------------


@contextlib.contextmanager
def _cuda_autocast_norms():
    """CPU autocast keeps group_norm / layer_norm in bf16; CUDA autocast runs them in fp32 (its fp32 op list),
    which makes their outputs, and what SiLU and the LoRA inputs save of them, twice as big. Emulated here, for
    the forward pass and for checkpointing's recomputation in backward, so the simulated memory is the GPU's."""
    import torch.nn.functional as F

    originals = {"group_norm": F.group_norm, "layer_norm": F.layer_norm}

    def fp32(original):
        def run(*args, **kwargs):
            if torch.is_autocast_enabled("cpu"):
                with torch.autocast("cpu", enabled=False):
                    args = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
                    kwargs = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kwargs.items()}
                    return original(*args, **kwargs)
            return original(*args, **kwargs)

        return run

    try:
        for name, original in originals.items():
            setattr(F, name, fp32(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(F, name, original)


def simulate_step_memory(kind: str, resolution: int, batch_size: int, rank: int = 16, *, gradient_checkpointing: bool = False,
                         base_weights: str = "bf16", mixed_precision: str = "bf16", targets: str = "attention",
                         cuda_autocast: bool = True) -> dict:
    """Our training step's memory for a full-size architecture, simulated under FakeTensorMode (no memory used).

    The UNet with LoRA (fp32) on frozen weights in `base_weights`, cached latents and text embeddings as inputs,
    forward under autocast, MSE loss, backward, AdamW step: what `Trainer.train_step` does with cached batches.
    Returns bytes: weights (frozen base), lora_optimizer (LoRA weights + AdamW state), saved (activations alive
    at the end of the forward pass), peak (the largest live total during the step, incl. LoRA gradients) on
    the second step (the first one creates the optimizer state). Attention runs through the CPU flash kernel,
    which saves O(tokens) per head like the CUDA flash / memory-efficient kernels."""
    from diffusers import UNet2DConditionModel
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lora_studio.engine import lora as lora_mod
    from lora_studio.engine.models import shipped_config

    cfg_dir = shipped_config(kind)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[base_weights]
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg_dir / "unet"))
    unet.requires_grad_(False)
    lora_mod.add_lora(unet, lora_mod.lora_config(rank, rank, lora_mod.unet_targets(targets)))
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    h = resolution // 8
    with FakeTensorMode(allow_non_fake_inputs=True):
        # Materialize the meta parameters as fake ones by assignment (no .to(): fake parameters cannot be swapped).
        for m in unet.modules():
            for n, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[n] = torch.nn.Parameter(torch.empty(p.shape, dtype=torch.float32 if p.requires_grad else dtype),
                                                          requires_grad=p.requires_grad)
            for n, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[n] = torch.zeros(b.shape, dtype=b.dtype)
        params = [p for p in unet.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
        latents = torch.randn(batch_size, 4, h, h)
        embeds = torch.randn(batch_size, 77, unet.config.cross_attention_dim)
        extra = {}
        if kind == "sdxl":
            extra["added_cond_kwargs"] = {"text_embeds": torch.randn(batch_size, 1280), "time_ids": torch.randn(batch_size, 6)}
        tracker = LiveTensorBytes()
        for p in unet.parameters():
            tracker.track(p)
        weights = sum(p.untyped_storage().nbytes() for p in unet.parameters() if not p.requires_grad)
        lora_bytes = sum(p.untyped_storage().nbytes() for p in params)
        for t in (latents, embeds, *extra.get("added_cond_kwargs", {}).values()):
            tracker.track(t)
        out = {}
        for i in range(2):
            tracker.reset_peak()
            with tracker:
                noise = torch.randn_like(latents)
                ts = torch.randint(0, 1000, (batch_size,))
                start = tracker.current
                # The norm policy stays on through backward: checkpointing recomputes blocks there.
                norms = _cuda_autocast_norms() if (cuda_autocast and compute != torch.float32) else contextlib.nullcontext()
                with norms:
                    with torch.autocast("cpu", dtype=compute, enabled=compute != torch.float32):
                        pred = unet(latents.to(compute), ts, embeds.to(compute), **extra).sample
                    loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
                    del pred
                    saved = tracker.current - start
                    loss.backward()
                    del loss
                opt.step()
                opt.zero_grad(set_to_none=True)
            out = {"weights": weights, "saved": saved, "peak": tracker.peak}
        state = sum(t.untyped_storage().nbytes() for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor) and t.dim())
        out["lora_optimizer"] = lora_bytes + state
    return out


CALIBRATION_GRID = [
    *[(kind, res, bs, gc_, "bf16", "bf16")
      for kind, resolutions in (("sd1", (512, 768)), ("sd2", (512, 768)), ("sdxl", (1024, 768)))
      for res in resolutions
      for bs in (1, 2)
      for gc_ in (False, True)],
    # Precision: fp32 everywhere, and fp32 weights under bf16 autocast.
    ("sd1", 512, 1, False, "fp32", "no"),
    ("sd1", 512, 1, True, "fp32", "no"),
    ("sd1", 512, 1, False, "fp32", "bf16"),
    ("sd1", 512, 1, True, "fp32", "bf16"),
]


def calibrate(grid=None, out=sys.stdout) -> list[dict]:
    rows = []
    for kind, res, bs, gc_, base, mixed in grid or CALIBRATION_GRID:
        t0 = time.perf_counter()
        r = simulate_step_memory(kind, res, bs, gradient_checkpointing=gc_, base_weights=base, mixed_precision=mixed)
        row = {"kind": kind, "resolution": res, "batch_size": bs, "gradient_checkpointing": gc_, "base_weights": base,
               "mixed_precision": mixed, **r, "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), file=out, flush=True)
    return rows


if __name__ == "__main__":  # python -m lora_studio.engine.bench calibrate | tiny
    if len(sys.argv) > 1 and sys.argv[1] == "calibrate":
        calibrate()
    else:
        sys.exit(bench_command(sys.argv[1] if len(sys.argv) > 1 else "tiny"))
