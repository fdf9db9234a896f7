"""The run on the Train tab, as one observable object: the RunState of the run shown, live or reopened.

The widgets render from it and keep no run state of their own; the engine process feeds it events while
a run trains, and a reopened run is its event log folded the same way (core/run_state.py).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from lora_studio.core import events as ev
from lora_studio.core.run_state import RunState
from lora_studio.core.runs import RunDir, read_state


class RunModel(QObject):
    changed = Signal(object)  # the event just folded in; None when the state was replaced as a whole

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.run: RunDir | None = None
        self.state = RunState()
        self.live = False  # an engine process is feeding it now
        self.notice = ""  # a line of the app's own (starting, stopping), shown until the run says more

    def show(self, run: RunDir | None) -> None:
        """Show a run as its folder tells it (None: no run at all)."""
        self.run, self.live, self.notice = run, False, ""
        self.state = read_state(run) if run is not None else RunState()
        self.changed.emit(None)

    def begin(self, run: RunDir, *, fresh: bool, notice: str) -> None:
        """An engine starts feeding `run`: from nothing (a new run), or continuing what it already shows."""
        if fresh:
            self.state = RunState()
        elif run != self.run:
            self.state = read_state(run)
        self.state.new_attempt()  # the last attempt's ending and error are over as the engine starts
        self.run, self.live, self.notice = run, True, notice
        self.changed.emit(None)

    def apply(self, event: ev.Event) -> None:
        activity = self.state.activity
        self.state.apply(event)
        if self.state.activity != activity:
            self.notice = ""  # the engine said what it is doing now
        self.changed.emit(event)

    def end(self) -> None:
        """The engine process is gone."""
        self.live = False
        self.notice = ""
        self.changed.emit(None)

    def say(self, notice: str) -> None:
        self.notice = notice
        self.changed.emit(None)

    @property
    def run_dir(self) -> Path | None:
        return self.run.path if self.run is not None else None
