"""Running out of memory, for real: the engine in a process whose address space is capped a little above
what its imports took (tests/engine/resource_limited.py), so torch's own allocator fails mid-run. The run
must say so in one error event with the settings to change, leave its last checkpoint and export as they
were, and resume from that checkpoint once the suggested change is applied."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import make_dataset, tiny_config, write_config

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.fit_advice import with_changes

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
LIMITED = Path(__file__).with_name("resource_limited.py")
# Batch 8 at 512 px needs well over 1 GB more than the imports on this tiny model; caching at 512 px and
# the steps at 64 px need far less than this.
HEADROOM = 512 << 20


def engine(*args: str, cap: int | None = None) -> tuple[int, list[ev.Event], str]:
    head = [sys.executable, str(LIMITED), "memory", str(cap)] if cap else [sys.executable, "-m", "lora_studio"]
    proc = subprocess.run([*head, *args], capture_output=True, text=True, env=ENV, timeout=600)
    return proc.returncode, [ev.from_json(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


def files_under(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_out_of_memory_keeps_the_run_and_its_fix_resumes_it(tiny_model_dir, tmp_path):
    data = make_dataset(tmp_path / "data" / "10_tstyle", n=8, sizes=((96, 96),))  # one bucket: full batches of 8
    run = tmp_path / "run"
    cfg = tiny_config(tiny_model_dir, data, run, train={"max_steps": 2, "batch_size": 2})
    code, events, err = engine("train", str(write_config(cfg, tmp_path / "run.toml")))
    assert code == 0, err
    kept = {name: blob for name, blob in files_under(run).items() if name.startswith("checkpoints") or name.endswith(".safetensors")}
    assert any("step_000002" in name for name in kept)

    # The artist raises the batch and the resolution and resumes, on a machine with little memory left.
    write_config(cfg.replace(train={"max_steps": 4, "batch_size": 8, "resolution": 512},
                             dataset={"min_bucket_side": 256, "max_bucket_side": 1024}), run / "config.toml")
    code, events, err = engine("train", str(run), "--resume", cap=HEADROOM)

    assert code == 1
    errors = [e for e in events if isinstance(e, ev.Error)]
    assert [e.code for e in errors] == ["out_of_memory"], err[-3000:]
    oom = errors[0]
    assert oom.message.startswith("The computer ran out of memory")
    assert "the last checkpoint (step 2) is intact" in oom.hint
    assert oom.fix and all(f"{key} = " in oom.hint for key in oom.fix), oom.hint
    assert events[-1] == ev.Finished("failed", 0, time=events[-1].time)
    assert "out of memory" in err  # a headless user sees it too, with the hint
    # Nothing half-written, nothing lost: the checkpoint and the export are byte for byte what they were,
    # and no temp file or folder is left behind.
    now = files_under(run)
    assert {name: now.get(name) for name in kept} == kept
    assert not [name for name in now if any(part.startswith(".") or part.endswith(".tmp") for part in Path(name).parts)]
    assert [e.code for e in ev.read_jsonl(run / "events.jsonl") if isinstance(e, ev.Error)] == ["out_of_memory"]

    # Applying the suggested settings, the run continues from its checkpoint to the end.
    write_config(with_changes(config_mod.load(run / "config.toml"), oom.fix), run / "config.toml")
    code, events, err = engine("train", str(run), "--resume")
    assert code == 0, err
    started = next(e for e in events if isinstance(e, ev.Started))
    assert started.start_step == 2
    assert events[-1].status == "completed" and events[-1].step == 4
    assert next(e for e in events if isinstance(e, ev.Exported)).verified


def test_allocation_failures_of_every_cpu_kernel_count_as_out_of_memory():
    import torch

    from lora_studio.engine.out_of_memory import out_of_memory_where

    # oneDNN's convolutions report a failed scratchpad allocation only as "could not create a primitive";
    # under the address-space cap above, with two threads, that is how the CPU runs out (seen in CI).
    assert out_of_memory_where(RuntimeError("could not create a primitive")) == "cpu"
    assert out_of_memory_where(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")) == "cpu"
    assert out_of_memory_where(MemoryError()) == "cpu"
    assert out_of_memory_where(torch.OutOfMemoryError("CUDA out of memory")) == "gpu"
    assert out_of_memory_where(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
