"""What a benchmark ran on: the device in words, the package versions, and diffusers kept quiet.

Shared by the speed benchmark (`engine.bench.bench`) and the learning one (`engine.bench.learning`).
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch


def device_description(device: torch.device) -> str:
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


def versions() -> dict:
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


@contextlib.contextmanager
def quiet_diffusers():
    # diffusers warns on every `.to(dtype)` of a model built from a config; the benchmark casts on purpose.
    from diffusers.utils import logging as diffusers_logging

    before = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(before)
