"""Which exceptions mean "out of memory", and where: torch raises its own error for a GPU, its CPU allocator
a RuntimeError with a fixed wording, and Python a MemoryError."""

from __future__ import annotations

import torch


def out_of_memory_where(error: BaseException) -> str | None:
    """"gpu" or "cpu" when `error` is an allocation failure, else None."""
    if isinstance(error, torch.OutOfMemoryError):
        return "gpu"
    if isinstance(error, MemoryError):
        return "cpu"  # Python's own allocation failure
    if isinstance(error, RuntimeError):
        text = str(error)
        # torch's CPU allocator says "can't allocate memory"; oneDNN (convolutions on the CPU) reports a
        # failed scratchpad allocation only as "could not create a primitive" (ideep maps every dnnl
        # status, dnnl_out_of_memory included, to that sentence). On shapes a model already ran with, the
        # one cause left is memory: seen with two threads under an address-space cap.
        if "can't allocate memory" in text or "could not create a primitive" in text:
            return "cpu"
    return None


def release_cached_memory() -> None:
    """After a failed allocation: hand the caching allocator's free blocks back, so what runs next has them."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
