"""Memory calibration of the fit estimate (`lora_studio.core.fit`), shapes only.

`python -m lora_studio.engine.bench.fit_calibration` simulates the peak memory of our training step for the
full-size architectures under `FakeTensorMode` (shapes only, no memory, no compute) and prints the table the
fit estimate was calibrated from (see docs/performance.md). The simulation counts memory with
`engine.bench.measure.LiveTensorBytes`, the same counter as the benchmark's CPU memory.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import torch

from lora_studio.engine.bench.measure import LiveTensorBytes


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

    from lora_studio.core.model_kinds import shipped_config
    from lora_studio.engine.training import lora as lora_mod

    cfg_dir = shipped_config(kind)
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    # fp8: materialized in the compute dtype, then stored as the trainer stores it (engine/training/fp8.py).
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": compute}[base_weights]
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
        if base_weights == "fp8":
            from lora_studio.engine.training.fp8 import store_in_fp8

            store_in_fp8(unet, compute)
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



if __name__ == "__main__":  # python -m lora_studio.engine.bench.fit_calibration
    calibrate()
