"""What the benchmark measures besides time: FLOPs, the device's matmul rate, and memory.

FLOPs per step come from `torch.utils.flop_counter.FlopCounterMode` (plus the CPU flash-attention kernels it
lacks); MFU divides the achieved rate by `matmul_rate`, measured on the same device in the same run. On CUDA
memory is `torch.cuda.memory_allocated` / `max_memory_allocated`; on a CPU (and under FakeTensorMode, for
`engine.bench.fit_calibration`) `LiveTensorBytes` is their counterpart. Used by `engine.bench.bench`,
`engine.bench.sides` and `engine.bench.fit_calibration`.
"""

from __future__ import annotations

import gc
import sys
import time
import weakref
from typing import Any, Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    sync(device)
    iters, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < seconds or iters < 5:
        a @ b
        iters += 1
        if iters % 5 == 0:
            sync(device)
            elapsed = time.perf_counter() - start
    sync(device)
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
