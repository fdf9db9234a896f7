"""Resumable checkpoints: `RUN_DIR/checkpoints/step_000200/`, keeping the newest K.

A checkpoint is written into a hidden temp folder and renamed into place, so a crash or an
out-of-memory error mid-save never leaves a half-written checkpoint; the previous ones stay valid.
Everything is reloaded with `torch.load(weights_only=True)` / safetensors: no pickle.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from lora_studio.engine.tensor_files import save_safetensors, save_torch, write_bytes

STEP_DIR = re.compile(r"^step_(\d{6,})$")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint, oldest first."""
    root = checkpoints_dir(run_dir)
    found = []
    if root.is_dir():
        for d in root.iterdir():
            m = STEP_DIR.match(d.name)
            if m and (d / "state.json").exists() and (d / "lora.safetensors").exists():
                found.append((int(m.group(1)), d))
    return sorted(found)


def save(run_dir: Path, step: int, lora: dict[str, torch.Tensor], optimizer, lr_scheduler, state: dict, keep: int) -> Path:
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_safetensors(lora, tmp / "lora.safetensors")
        save_torch(optimizer.state_dict(), tmp / "optimizer.pt")
        save_torch(lr_scheduler.state_dict(), tmp / "scheduler.pt")
        save_torch(_rng_state(), tmp / "rng.pt")
        write_bytes(tmp / "state.json", json.dumps(state, indent=1, sort_keys=True).encode("utf-8"))
    except BaseException:
        # A full disk or an out-of-memory while saving: leave no half-written folder behind (the last
        # complete checkpoint is untouched, since nothing is renamed until every file is written).
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict, dict, dict, dict]:
    """(lora weights, optimizer state, scheduler state, rng state, state.json)."""
    lora = load_file(ckpt / "lora.safetensors")
    optim = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
    sched = torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=True)
    rng = torch.load(ckpt / "rng.pt", map_location="cpu", weights_only=True)
    state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    return lora, optim, sched, rng, state


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
