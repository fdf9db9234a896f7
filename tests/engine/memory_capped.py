"""`python memory_capped.py HEADROOM_BYTES ARGS...` runs `python -m lora_studio ARGS...` in a process whose
address space (RLIMIT_AS) is capped HEADROOM bytes above what its imports took: a machine with little
memory left. Allocations beyond it fail for real, in torch's CPU allocator, as they do when RAM runs out."""

import resource
import runpy
import sys

import accelerate  # noqa: F401  (everything heavy is imported before the cap, so the cap is about training)
import diffusers  # noqa: F401
import peft  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

import lora_studio.engine.train  # noqa: F401


def address_space_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


if __name__ == "__main__":
    cap = address_space_bytes() + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.argv = ["lora_studio", *sys.argv[2:]]
    runpy.run_module("lora_studio", run_name="__main__")
