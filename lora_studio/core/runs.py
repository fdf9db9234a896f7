"""A run's folder: what lies where, what counts as a run and as a checkpoint, and the runs of a project.

The one place that spells the folder's file names; the engine writes into it and the app reads it
through `RunDir`, so the two cannot drift apart.

```
runs/<YYYYmmdd-HHMMSS>/
  config.toml                       the exact settings the run used (written once, by RunDir.create)
  events.jsonl                      every event the engine sent (core/events.py)
  samples/step_000200_p0_s42.png    sample images: step, prompt index, seed
  checkpoints/step_000200/          a checkpoint: lora.safetensors + state.json (+ what resuming needs)
  <name>.safetensors                the end-of-run export; <name>-step000200.safetensors for an earlier step
  compare/<id>/grid.json            a comparison grid, beside its images and its own events.jsonl
  ranking.json                      the checkpoint to keep (core/ranking.py)
```
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.config import Config
from lora_studio.core.errors import ConfigError
from lora_studio.core.run_state import RunState

CONFIG_FILE = "config.toml"
EVENTS_FILE = "events.jsonl"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_LORA = "lora.safetensors"
CHECKPOINT_STATE = "state.json"
COMPARE_DIR = "compare"
GRID_FILE = "grid.json"
RANKING_FILE = "ranking.json"
EXPORT_SUFFIX = ".safetensors"

HEAD_BYTES = 16 * 1024
TAIL_BYTES = 64 * 1024

_STEP_DIR = re.compile(r"step_(\d{6,})")
_SAMPLE_NAME = re.compile(r"step_(\d+)_p(\d+)_s(-?\d+)\.png")


def events_file(folder: Path) -> Path:
    """The event log of a run folder, or of a comparison's folder (a grid keeps its own)."""
    return Path(folder) / EVENTS_FILE


def grid_file(folder: Path) -> Path:
    """The grid.json of one comparison's folder (RUN_DIR/compare/<id>/)."""
    return Path(folder) / GRID_FILE


def ranking_file(folder: Path) -> Path:
    """The ranking.json of a run folder, or of a comparison's folder (a ranked grid keeps its own)."""
    return Path(folder) / RANKING_FILE


def sample_name(step: int, index: int, seed: int) -> str:
    return f"step_{step:06d}_p{index}_s{seed}.png"


@dataclass(frozen=True, order=True)
class SampleFile:
    step: int
    index: int  # the prompt's place in sample.prompts
    seed: int
    path: Path

    @classmethod
    def parse(cls, path: Path) -> SampleFile | None:
        """The sample a file name describes, or None for any other file."""
        m = _SAMPLE_NAME.fullmatch(Path(path).name)
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), Path(path)) if m else None


@dataclass(frozen=True, order=True)
class CheckpointDir:
    """One checkpoint: `step_NNNNNN/` holding at least the LoRA weights and state.json. The engine writes
    the rest (optimizer, scheduler, RNG) beside them; a folder without both is not a checkpoint (yet)."""

    step: int
    path: Path

    @property
    def lora(self) -> Path:
        return self.path / CHECKPOINT_LORA

    @property
    def state(self) -> Path:
        return self.path / CHECKPOINT_STATE

    def is_complete(self) -> bool:
        return self.state.is_file() and self.lora.is_file()

    @classmethod
    def at(cls, path: Path) -> CheckpointDir | None:
        """The checkpoint a folder's name says it is (complete or not), or None for any other folder."""
        m = _STEP_DIR.fullmatch(Path(path).name)
        return cls(int(m.group(1)), Path(path)) if m else None


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def create(cls, runs_dir: Path, cfg: Config) -> RunDir:
        """A fresh `runs_dir/<YYYYmmdd-HHMMSS>/` holding the run's config.toml (output.dir = the folder).

        Raises ConfigError before creating anything when the settings cannot train."""
        run = cls(_unique_dir(Path(runs_dir), time.strftime("%Y%m%d-%H%M%S")))
        cfg = cfg.replace(output={"dir": str(run.path)})
        problems = config_mod.validate(cfg)
        if problems:
            raise ConfigError(problems)
        run.path.mkdir(parents=True)
        run.write_config(cfg)
        return run

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def events(self) -> Path:
        return events_file(self.path)

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def compare_dir(self) -> Path:
        return self.path / COMPARE_DIR

    @property
    def ranking(self) -> Path:
        return ranking_file(self.path)

    def is_run(self) -> bool:
        """What a run is, for the CLI and the app alike: a folder with the settings it trains with."""
        return self.config.is_file()

    def write_config(self, cfg: Config) -> None:
        # The engine calls this again when it starts; the same settings are not written a second time.
        text = config_mod.dumps(cfg)
        try:
            if self.config.read_text(encoding="utf-8") == text:
                return
        except (OSError, UnicodeDecodeError):
            pass
        config_mod.save(cfg, self.config)

    def load_config(self) -> Config:
        """The run's settings, not validated (a run folder is read whatever it holds)."""
        return config_mod.load(self.config, check=False)

    def read_events(self):
        return ev.read_jsonl(self.events)

    def head_and_tail_events(self) -> list[ev.Event]:
        """The events of the first HEAD_BYTES and the last TAIL_BYTES of the event log: a long run's log
        holds tens of thousands of progress lines, and all a summary needs is at its two ends (the start,
        after the dataset's warnings; the last progress and how it ended)."""
        with open(self.events, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            if size <= HEAD_BYTES + TAIL_BYTES:
                lines = f.read().split(b"\n")
            else:
                head = f.read(HEAD_BYTES).split(b"\n")[:-1]  # the last piece is a line cut in the middle
                f.seek(size - TAIL_BYTES)
                lines = head + f.read().split(b"\n")[1:]  # and so is the tail's first
        return [e for raw in lines if (e := ev.from_json(raw.decode("utf-8", "replace"))) is not None]

    # --- samples ---------------------------------------------------------------------------------

    def sample(self, step: int, index: int, seed: int) -> Path:
        return self.samples_dir / sample_name(step, index, seed)

    def sample_files(self) -> list[SampleFile]:
        """Every sample image in samples/, by step, then prompt index."""
        if not self.samples_dir.is_dir():
            return []
        return sorted(s for p in self.samples_dir.iterdir() if (s := SampleFile.parse(p)) is not None)

    # --- checkpoints -----------------------------------------------------------------------------

    def checkpoint(self, step: int) -> CheckpointDir:
        return CheckpointDir(step, self.checkpoints_dir / f"step_{step:06d}")

    def checkpoints(self) -> list[CheckpointDir]:
        """Every complete checkpoint, oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(c for d in self.checkpoints_dir.iterdir() if (c := CheckpointDir.at(d)) is not None and c.is_complete())

    def checkpoint_steps(self) -> tuple[int, ...]:
        return tuple(c.step for c in self.checkpoints())

    # --- exports and comparisons -----------------------------------------------------------------

    def export_file(self, name: str, step: int | None = None) -> Path:
        """Where an export goes by default: `<name>.safetensors` at the run's end, else named by its step."""
        return self.path / (f"{name}{EXPORT_SUFFIX}" if step is None else f"{name}-step{step:06d}{EXPORT_SUFFIX}")

    def grid_files(self) -> list[Path]:
        """The grid.json of every comparison made of this run (any order)."""
        return list(self.compare_dir.glob(f"*/{GRID_FILE}"))


def _unique_dir(parent: Path, name: str) -> Path:
    # Two runs started in the same second must not share a folder.
    candidate, n = parent / name, 2
    while candidate.exists():
        candidate, n = parent / f"{name}-{n}", n + 1
    return candidate


def list_runs(runs_dir: Path | None) -> list[RunDir]:
    """The runs in a project's runs/ folder, newest first (their names are the time they were made)."""
    if runs_dir is None or not Path(runs_dir).is_dir():
        return []
    runs = [RunDir(p) for p in Path(runs_dir).iterdir() if p.is_dir()]
    return sorted((r for r in runs if r.is_run()), key=lambda r: r.name, reverse=True)


# --- summaries (the history's rows) ------------------------------------------------------------------


def read_state(run: RunDir, *, whole: bool = True) -> RunState:
    """The run as its event log tells it, with the checkpoints its folder holds now (the engine keeps
    only the newest few). whole=False folds the log's two ends only, enough for a summary."""
    try:
        events = run.read_events() if whole else run.head_and_tail_events()
    except OSError:
        events = []
    state = RunState.replay(events)
    state.checkpoints = list(run.checkpoint_steps())
    return state


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    started_at: float | None = None
    status: str = "interrupted"  # completed | stopped | failed | interrupted (no finished event) | running
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    exported: str = ""
    error: str = ""
    checkpoint_steps: tuple[int, ...] = ()
    status_word: str = "Interrupted"

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def resumable(self) -> bool:
        return bool(self.checkpoint_steps) and self.status in ("stopped", "failed", "interrupted")

    def status_text(self) -> str:
        return "Training…" if self.status == "running" else self.status_word

    @property
    def never_trained(self) -> bool:
        """It failed before its first step (a model that would not load, no usable image): nothing in it
        but its settings and the error."""
        return self.status == "failed" and self.step == 0 and not self.checkpoint_steps


def summarize(run: RunDir) -> RunSummary:
    state = read_state(run, whole=False)
    started_at = state.started_at
    # Before the engine says it started: when its log was last written, else when Start made the folder.
    for written in (run.events, run.config):
        if started_at is None and written.exists():
            started_at = written.stat().st_mtime
    return RunSummary(run_dir=run.path, started_at=started_at, status=state.status, step=state.step,
                      total_steps=state.total_steps, loss=state.loss, exported=state.export_path,
                      error=state.error.message if state.error else "", checkpoint_steps=tuple(state.checkpoints),
                      status_word=state.status_word())


def summaries(runs_dir: Path | None) -> list[RunSummary]:
    """A summary of every run of a project worth listing, newest first.

    Runs that failed before their first step are left out, except the newest run: its error is what the
    artist is reading now, while older ones would only clutter the history (their folders stay on disk).
    """
    runs = [summarize(r) for r in list_runs(runs_dir)]
    return runs[:1] + [r for r in runs[1:] if not r.never_trained]
