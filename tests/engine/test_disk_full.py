"""A disk that fills up mid-run, for real: the engine runs under RLIMIT_FSIZE (tests/engine/resource_limited.py),
so writing the next checkpoint fails the way a write to a full disk does. The run must say so in one error
event naming the file and what to do, keep the last checkpoint and export as they were, leave no temp
folder, and resume once there is room."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import make_dataset, tiny_config, write_config

from lora_studio.core import events as ev

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
LIMITED = Path(__file__).with_name("resource_limited.py")
FILE_SIZE_LIMIT = 100_000  # the settings files and events.jsonl stay far below; a rank-64 checkpoint is ~650 kB


def engine(*args: str, file_size: int | None = None) -> tuple[int, list[ev.Event], str]:
    head = [sys.executable, str(LIMITED), "file-size", str(file_size)] if file_size else [sys.executable, "-m", "lora_studio"]
    proc = subprocess.run([*head, *args], capture_output=True, text=True, env=ENV, timeout=600)
    return proc.returncode, [ev.from_json(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE behaves this way on Linux")
def test_a_full_disk_keeps_the_run_and_it_resumes_once_there_is_room(tiny_model_dir, tmp_path):
    data = make_dataset(tmp_path / "data" / "5_tstyle", n=4)
    run = tmp_path / "run"
    cfg = tiny_config(tiny_model_dir, data, run, train={"max_steps": 2}, network={"rank": 64, "alpha": 64.0})
    code, _, err = engine("train", str(write_config(cfg, tmp_path / "run.toml")))
    assert code == 0, err
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and (p.suffix == ".safetensors" or "checkpoints" in p.parts)}

    write_config(cfg.replace(train={"max_steps": 4}), run / "config.toml")
    code, events, err = engine("train", str(run), "--resume", file_size=FILE_SIZE_LIMIT)

    assert code == 1
    errors = [e for e in events if isinstance(e, ev.Error)]
    assert [e.code for e in errors] == ["disk_full"], err[-3000:]
    assert errors[0].message.startswith("There was no room to write ") and "lora.safetensors" in errors[0].message
    assert "Free some space" in errors[0].hint and "last checkpoint included, is intact" in errors[0].hint
    assert events[-1].status == "failed"
    assert {p: p.read_bytes() for p in kept} == kept  # the step-2 checkpoint and the export, byte for byte
    assert not [p for p in run.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert "disk_full" in [e.code for e in ev.read_jsonl(run / "events.jsonl") if isinstance(e, ev.Error)]

    code, events, err = engine("train", str(run), "--resume")
    assert code == 0, err
    assert next(e for e in events if isinstance(e, ev.Started)).start_step == 2
    assert events[-1].status == "completed" and events[-1].step == 4
