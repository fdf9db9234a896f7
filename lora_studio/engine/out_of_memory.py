"""Which exceptions mean "out of memory", and where: torch raises its own error for a GPU, its CPU allocator
a RuntimeError with a fixed wording, and Python a MemoryError."""

from __future__ import annotations

import torch


def out_of_memory_where(error: BaseException) -> str | None:
    """"gpu" or "cpu" when `error` is an allocation failure, else None."""
    if isinstance(error, torch.OutOfMemoryError):
        return "gpu"
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "can't allocate memory" in str(error)):
        return "cpu"  # Python's own allocation failure, or torch's CPU allocator's
    return None


def release_cached_memory() -> None:
    """After a failed allocation: hand the caching allocator's free blocks back, so what runs next has them."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
