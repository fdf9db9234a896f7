"""What a run shows, folded from its event stream: the one reading of the events (core/events.py).

The Train tab folds the engine's events live, a reopened run folds its event log, and the history folds
the two ends of the log for its row: the same `apply`, so the three always agree. A new event type needs
its class in core/events.py and one branch in `RunState.apply`.

A run's log can hold several attempts (stopped and resumed, or tried again after an error): an event
after a `finished` begins the next one, which forgets the last attempt's ending, error and warnings; its
`started` says where it continues from, and what the last attempt did after that step is replaced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lora_studio.core import events as ev

RATE_WINDOW = 30  # progress events the speed is measured over

PHASE_WORDS = {
    "loading": "Loading the model…", "caching": "Preparing the images…", "training": "Training…",
    "sampling": "Making sample images…", "saving": "Saving a checkpoint…", "exporting": "Exporting the LoRA…",
}


@dataclass
class RunState:
    run_dir: str = ""
    started_at: float | None = None  # the first attempt's start
    phase: str = ""  # the engine's: loading | caching | training | sampling | saving | exporting
    activity: str = ""  # one line: what the run is doing, or just did
    start_step: int = 0  # where this attempt started (> 0 when resumed)
    step: int = 0
    total_steps: int = 0
    progressed: bool = False  # this attempt has trained a step
    eta_s: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    samples: list[ev.Sample] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)  # steps saved (a log read from disk: the ones kept)
    warnings: list[ev.Warning] = field(default_factory=list)  # this attempt's, all of them
    error: ev.Error | None = None
    exported: list[ev.Exported] = field(default_factory=list)
    ranking: ev.Ranking | None = None
    finished: ev.Finished | None = None
    began: bool = False  # any event at all (a run folder whose engine never started has none)
    _rate_window: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @classmethod
    def replay(cls, events) -> RunState:
        state = cls()
        for e in events:
            state.apply(e)
        return state

    def apply(self, e: ev.Event) -> RunState:
        """Fold one event in (in place; returns self). Unknown events change nothing."""
        self.began = True
        if self.finished is not None and not isinstance(e, ev.Finished):
            self._next_attempt()
        match e:
            case ev.Started():
                self.run_dir = e.run_dir
                self.started_at = self.started_at if self.started_at is not None else e.time
                self.total_steps, self.start_step, self.step = e.total_steps, e.start_step, e.start_step
                self.progressed, self.eta_s = False, None
                self._forget_after(e.start_step)
                where = f" from step {e.start_step:,}" if e.start_step else ""
                self.activity = f"Started{where} on {e.device or 'the GPU'}: {e.total_steps:,} steps."
            case ev.Status():
                self.phase = e.phase
                self.activity = e.message or PHASE_WORDS.get(e.phase, e.phase)
            case ev.Progress():
                if self.losses and e.step <= self.losses[-1][0]:
                    self.losses = [p for p in self.losses if p[0] < e.step]  # a resumed run repeats steps
                if math.isfinite(e.loss):
                    self.losses.append((e.step, e.loss))
                self.step, self.total_steps, self.eta_s, self.progressed = e.step, e.total_steps, e.eta_s, True
                self._measure(e.time, e.step)
            case ev.Validation():
                self.validation = [p for p in self.validation if p[0] < e.step] + [(e.step, e.loss)]
            case ev.Sample():
                self.samples = [s for s in self.samples if s.path != e.path] + [e]
            case ev.Checkpoint():
                self.checkpoints = sorted({*self.checkpoints, e.step})
                self.activity = f"Saved a checkpoint at step {e.step:,}."
            case ev.Exported():
                self.exported.append(e)
                check = "verified ✓" if e.verified else f"{len(e.problems)} problem(s) found" if e.problems else "not verified"
                self.activity = f"Exported {Path(e.path).name} ({check})."
            case ev.Ranking():
                self.ranking = e
            case ev.Warning():
                self.warnings.append(e)
            case ev.Error():
                self.error = e
            case ev.Finished():
                self.finished = e
                self.step = max(self.step, e.step)
        return self

    def new_attempt(self) -> None:
        """What the next event after a `finished` does anyway; the app calls it as it starts the engine."""
        if self.finished is not None:
            self._next_attempt()

    def _next_attempt(self) -> None:
        self.finished, self.error, self.warnings, self.phase, self.activity = None, None, [], "", ""

    def _forget_after(self, start: int) -> None:
        # The steps after the checkpoint it continues from are trained again; a start from step 0 makes
        # the step-0 samples (the base model's) again too.
        def kept(step: int) -> bool:
            return 0 < start and step <= start

        self.losses = [p for p in self.losses if kept(p[0])]
        self.validation = [p for p in self.validation if kept(p[0])]
        self.samples = [s for s in self.samples if kept(s.step)]
        self._rate_window = []

    def _measure(self, t: float, step: int) -> None:
        if self._rate_window and step < self._rate_window[-1][1]:
            self._rate_window = []
        self._rate_window = [*self._rate_window[-(RATE_WINDOW - 1):], (t, step)]

    # --- what follows from it ----------------------------------------------------------------------

    @property
    def status(self) -> str:
        """completed | stopped | failed, or interrupted while no `finished` came (a crash, a kill, or running)."""
        return self.finished.status if self.finished is not None else "interrupted"

    @property
    def resumable(self) -> bool:
        return bool(self.checkpoints) and self.status != "completed"

    @property
    def loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None

    @property
    def rate(self) -> float | None:
        """Steps per second over the last few progress events."""
        if len(self._rate_window) < 2:
            return None
        (t0, s0), (t1, s1) = self._rate_window[0], self._rate_window[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    @property
    def export_path(self) -> str:
        if self.exported:
            return self.exported[-1].path
        return self.finished.export_path if self.finished is not None else ""

    def samples_by_step(self) -> dict[int, list[ev.Sample]]:
        out: dict[int, list[ev.Sample]] = {}
        for s in sorted(self.samples, key=lambda s: (s.step, s.index)):
            out.setdefault(s.step, []).append(s)
        return out

    def outcome_text(self) -> str:
        """The line that says how the run ended."""
        status = self.status
        if not self.began:
            return "This run has not started."
        exported = self.export_path
        saved = f" Saved {Path(exported).name} in {Path(exported).parent}." if exported else ""
        if status == "completed":
            return f"Finished: {self.step:,} steps.{saved}"
        if status == "stopped" and not self.checkpoints:
            return "Stopped before the first step; nothing was saved."
        if status == "stopped":
            return f"Stopped at step {self.step:,}.{saved} Resume continues from there."
        if self.checkpoints:
            return "Training did not finish. Resume continues from the last checkpoint."
        if status == "failed" and self.error is not None and self.step == 0:
            return f"Failed before the first step: {self.error.message}"  # "start again" alone would fail the same way
        return f"Training did not finish. {NO_CHECKPOINT}"

    def status_word(self) -> str:
        """The history's short word for how the run ended."""
        status = self.status
        if status == "completed":
            return "Completed"
        if status == "stopped":
            return "Stopped"  # the history's Step column says where
        if status == "failed":
            return "Failed"
        if not self.began:
            return "Not started"
        return "Interrupted" if self.checkpoints else "Interrupted (no checkpoint)"


NO_CHECKPOINT = "No checkpoint was saved; start again."


def format_eta(seconds: float) -> str:
    if seconds < 60:
        return "under a minute left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min left"
    return f"{minutes // 60} h {minutes % 60:02d} min left"


def progress_text(step: int, total: int, steps_per_s: float | None, eta_s: float | None) -> str:
    parts = [f"step {step:,} / {total:,}"]
    if steps_per_s:
        parts.append(f"{steps_per_s:.1f} it/s" if steps_per_s >= 1 else f"{1 / steps_per_s:.1f} s/it")
    if eta_s is not None and step < total:
        parts.append(format_eta(eta_s))
    return " · ".join(parts)
