"""Resumable checkpoints, keeping the newest K, each one verified before it is believed. What a checkpoint
is and where it lies (a `step_000200/` folder of the run) is core/runs.py's, so the app lists them alike.

A checkpoint is written into a hidden temp folder and renamed into place, so a crash or an
out-of-memory error mid-save never leaves a half-written checkpoint; the previous ones stay valid.
Its last file is `manifest.json`: the size and sha256 of every other file. A file damaged afterwards
(a disk error, a sync tool, a hand edit, a power cut before the data reached the disk) no longer matches
it, so resume and export fall back to the newest intact checkpoint instead of training on garbage or
failing with a library's error. Checkpoints written before manifests existed are verified by loading.
Everything is reloaded with `torch.load(weights_only=True)` / safetensors: no pickle.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lora_studio.core import atomic
from lora_studio.core import events as ev
from lora_studio.core.errors import UserError
from lora_studio.core.runs import CHECKPOINT_LORA, CHECKPOINT_STATE, CheckpointDir, RunDir
from lora_studio.engine.tensor_files import save_safetensors, save_torch, write_bytes
from lora_studio.engine.training.cache import file_digest

MANIFEST = "manifest.json"
LORA, STATE = CHECKPOINT_LORA, CHECKPOINT_STATE
OPTIMIZER, SCHEDULER, RNG = "optimizer.pt", "scheduler.pt", "rng.pt"
EMA = "ema.pt"  # train.ema: the average's state and the weights training continues from (lora.safetensors holds the average)
# How each file is named in a message: the artist reads "its LoRA file", the file name says which one.
FILE_WORDS = {LORA: "its LoRA file", OPTIMIZER: "its optimizer file", SCHEDULER: "its learning-rate schedule file",
              RNG: "its random-state file", STATE: "its state file", MANIFEST: "its manifest", EMA: "its EMA file"}
WEIGHT_FILES = (LORA, STATE)  # what an export or a comparison reads
RESUME_FILES = (LORA, OPTIMIZER, SCHEDULER, RNG, STATE)  # what a resume reads (and EMA, when the state says "ema")


class Saved(NamedTuple):
    """A loaded checkpoint; optimizer, scheduler and rng are None when only the weights were read."""

    lora: dict[str, torch.Tensor]
    optimizer: dict | None
    scheduler: dict | None
    rng: dict | None
    state: dict
    ema: dict | None = None  # a run with train.ema: ema.LoraEMA.state()


class DamagedCheckpoint(UserError):
    code = "damaged_checkpoint"

    def __init__(self, step: int, folder: Path, reason: str):
        self.step, self.folder, self.reason = step, Path(folder), reason
        super().__init__(f"The checkpoint at step {step} ({folder.parent.name}/{folder.name}) is damaged: {reason}.",
                         hint="Use an earlier checkpoint of the run.")


class NoIntactCheckpoint(UserError):
    code = "no_intact_checkpoint"


def checkpoints_dir(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoints_dir


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint, oldest first (complete as written; not yet verified)."""
    return [(c.step, c.path) for c in RunDir(run_dir).checkpoints()]


def sweep_leftovers(run_dir: Path) -> list[Path]:
    """Remove what writes killed mid-way left in the run's folders (a checkpoint's temp folder, a temp
    config, sample or export file): a resume or a new start is the only writer then."""
    run_dir = Path(run_dir)
    return [p for folder in (run_dir, RunDir(run_dir).samples_dir, checkpoints_dir(run_dir)) for p in atomic.sweep(folder)]


def save(run_dir: Path, step: int, lora: dict[str, torch.Tensor], optimizer, lr_scheduler, state: dict, keep: int,
         ema: dict | None = None) -> Path:
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = RunDir(run_dir).checkpoint(step).path
    tmp = atomic.temp_dir_for(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_safetensors(lora, tmp / LORA)
        save_torch(optimizer.state_dict(), tmp / OPTIMIZER)
        save_torch(lr_scheduler.state_dict(), tmp / SCHEDULER)
        save_torch(_rng_state(), tmp / RNG)
        if ema is not None:
            save_torch(ema, tmp / EMA)
        write_bytes(tmp / STATE, json.dumps(state, indent=1, sort_keys=True).encode("utf-8"))
        # Last: a manifest describes only files that are completely written.
        write_bytes(tmp / MANIFEST, json.dumps(_manifest(tmp, step), indent=1, sort_keys=True).encode("utf-8"))
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


# --- verifying -----------------------------------------------------------------------------------

def _manifest(folder: Path, step: int) -> dict[str, Any]:
    files = {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)} for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    return {"version": 1, "step": step, "files": files}


def _step_of(folder: Path) -> int:
    found = CheckpointDir.at(folder)
    if found is None:
        raise ValueError(f"{folder} is not a checkpoint folder (step_NNNNNN)")
    return found.step


def _check_manifest(folder: Path, step: int, needed: tuple[str, ...]) -> None:
    """Raise DamagedCheckpoint when a file `needed` differs from what the manifest says was written.
    A checkpoint without a manifest (written by an older version) passes: loading it is its check."""
    path = folder / MANIFEST
    if not path.exists():
        return
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
        files, written_at = manifest["files"], int(manifest["step"])
    except (ValueError, KeyError, TypeError):
        raise DamagedCheckpoint(step, folder, f"{FILE_WORDS[MANIFEST]} ({MANIFEST}) cannot be read") from None
    if written_at != step:
        raise DamagedCheckpoint(step, folder, f"{FILE_WORDS[MANIFEST]} says it was written at step {written_at}, not {step}")
    for name in needed:
        words = f"{FILE_WORDS[name]} ({name})"
        expected = files.get(name) if isinstance(files, dict) else None
        if not isinstance(expected, dict):
            raise DamagedCheckpoint(step, folder, f"{words} is not in its manifest")
        try:
            size = (folder / name).stat().st_size
        except FileNotFoundError:
            raise DamagedCheckpoint(step, folder, f"{words} is missing") from None
        if size != expected.get("size"):
            what = "empty" if size == 0 else f"{size:,} bytes, not the {expected.get('size'):,} written"
            raise DamagedCheckpoint(step, folder, f"{words} is {what}")
        if file_digest(folder / name) != expected.get("sha256"):
            raise DamagedCheckpoint(step, folder, f"{words} does not hold the bytes that were written")


def _read(folder: Path, step: int, name: str, read):
    try:
        return read(folder / name)
    except Exception as e:  # noqa: BLE001 - safetensors, torch's zip reader and json each raise their own
        raise DamagedCheckpoint(step, folder, f"{FILE_WORDS[name]} ({name}) cannot be read ({type(e).__name__})") from e


def _torch_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_state(state: Any, step: int, folder: Path) -> dict:
    words = f"{FILE_WORDS[STATE]} ({STATE})"
    if not isinstance(state, dict):
        raise DamagedCheckpoint(step, folder, f"{words} is not a record of the run")
    if not isinstance(state.get("step"), int):
        raise DamagedCheckpoint(step, folder, f"{words} has no step")
    if state["step"] != step:
        raise DamagedCheckpoint(step, folder, f"{words} says step {state['step']}, but this is the checkpoint of step {step}")
    return state


def _check_weights(lora: dict[str, torch.Tensor], step: int, folder: Path) -> None:
    words = f"{FILE_WORDS[LORA]} ({LORA})"
    if not lora:
        raise DamagedCheckpoint(step, folder, f"{words} holds no weights")
    # Garbled bytes of the right length load without complaint; in a float they often read as NaN or
    # inf, which would end the resumed run as a NaN loss. (A manifest catches any change at all.)
    if not all(bool(torch.isfinite(t).all()) for t in lora.values() if t.is_floating_point()):
        raise DamagedCheckpoint(step, folder, f"{words} holds NaN or infinite values")


def load(ckpt: Path, *, weights_only: bool = False) -> Saved:
    """The checkpoint, verified: DamagedCheckpoint (saying which file and how) unless every file it needs
    is what was written. weights_only reads just the LoRA and its state (export, compare)."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    step = _step_of(ckpt)
    _check_manifest(ckpt, step, WEIGHT_FILES if weights_only else RESUME_FILES)
    state = _check_state(_read(ckpt, step, STATE, lambda p: json.loads(p.read_bytes().decode("utf-8"))), step, ckpt)
    lora = _read(ckpt, step, LORA, lambda p: load_file(p))
    _check_weights(lora, step, ckpt)
    if weights_only:
        return Saved(lora, None, None, None, state)
    optim = _read(ckpt, step, OPTIMIZER, _torch_load)
    sched = _read(ckpt, step, SCHEDULER, _torch_load)
    rng = _read(ckpt, step, RNG, _torch_load)
    ema = None
    if state.get("ema"):
        _check_manifest(ckpt, step, (EMA,))
        ema = _read(ckpt, step, EMA, _torch_load)
    return Saved(lora, optim, sched, rng, state, ema)


@dataclass(frozen=True)
class Intact:
    """The newest checkpoint that verified, and the newer ones that did not (newest first)."""

    step: int
    folder: Path
    saved: Saved
    damaged: list[DamagedCheckpoint]

    def fallback_warnings(self, doing: str) -> list[str]:
        """One sentence per damaged checkpoint: which one, why, and how many steps it costs."""
        out = []
        for d in self.damaged:
            lost = d.step - self.step
            out.append(f"The checkpoint at step {d.step} ({d.folder.parent.name}/{d.folder.name}) is damaged ({d.reason}), "
                       f"so {doing} step {self.step}, the newest intact one: {lost} step{'s' if lost != 1 else ''} "
                       f"of training {'are' if lost != 1 else 'is'} lost.")
        return out


def newest_intact(run_dir: Path, *, weights_only: bool = False, up_to: int | None = None) -> Intact | None:
    """The newest checkpoint (at or before step `up_to`) that verifies; None when the run has none at all.
    NoIntactCheckpoint when it has checkpoints but every one is damaged."""
    found = [(s, d) for s, d in list_checkpoints(run_dir) if up_to is None or s <= up_to]
    if not found:
        return None
    damaged: list[DamagedCheckpoint] = []
    for step, folder in reversed(found):
        try:
            return Intact(step, folder, load(folder, weights_only=weights_only), damaged)
        except DamagedCheckpoint as e:
            damaged.append(e)
    reasons = "; ".join(f"step {d.step}: {d.reason}" for d in damaged)
    raise NoIntactCheckpoint(f"The run has no intact checkpoint ({reasons}): start again.",
                             hint="Start a new run; the damaged checkpoints are left as they are.")


def resume_from(run_dir: Path, emit) -> Saved | None:
    """What `--resume` continues from: the newest intact checkpoint, with a `warning` event for each newer
    damaged one; None when the run has no checkpoint."""
    intact = newest_intact(run_dir)
    if intact is None:
        return None
    for message, damaged in zip(intact.fallback_warnings("the run continues from"), intact.damaged):
        emit(ev.Warning(message, code="damaged_checkpoint", path=str(damaged.folder)))
    return intact.saved


# --- random state --------------------------------------------------------------------------------

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
