"""`python resource_limited.py LIMIT BYTES ARGS...` runs `python -m lora_studio ARGS...` under a resource limit,
the way a machine that has run out of something fails, for real:

- `memory BYTES`: the address space (RLIMIT_AS) is capped BYTES above what the imports took, so allocations
  beyond it fail in torch's CPU allocator, as they do when RAM runs out;
- `file-size BYTES`: no file may grow past BYTES (RLIMIT_FSIZE); a write beyond it fails with EFBIG, as a
  write to a full disk fails with ENOSPC (Python ignores SIGXFSZ, so the write returns the error).
"""

import resource
import runpy
import sys

import accelerate  # noqa: F401  (everything heavy is imported before the limit, so it is about the run)
import diffusers  # noqa: F401
import peft  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

import lora_studio.engine.training.loop  # noqa: F401


def address_space_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


if __name__ == "__main__":
    limit, amount = sys.argv[1], int(sys.argv[2])
    if limit == "memory":
        cap = address_space_bytes() + amount
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    elif limit == "file-size":
        resource.setrlimit(resource.RLIMIT_FSIZE, (amount, amount))
    else:
        raise SystemExit(f"unknown limit {limit!r}: use memory or file-size")
    sys.argv = ["lora_studio", *sys.argv[3:]]
    runpy.run_module("lora_studio", run_name="__main__")
