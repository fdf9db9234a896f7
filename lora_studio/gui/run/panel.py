"""The Train tab: start / stop / resume a run, watch its progress, loss and samples, export the result.

Everything shown comes from the engine's events, live through TrainingProcess or replayed from a past
run's event log, so a reopened run looks the way it did while it trained. Errors go to a banner in
the panel, never a modal dialog: the artist should be able to read the message and the log together.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QSplitter, QToolButton, QVBoxLayout, QWidget

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.errors import UserError
from lora_studio.core.fit_advice import with_changes
from lora_studio.core.runs import RunDir, summaries, summarize
from lora_studio.gui.banner import Banner
from lora_studio.gui.compare.dialog import CompareDialog
from lora_studio.gui.engine_process import TrainingProcess
from lora_studio.gui.export_dialog import ExportDialog
from lora_studio.gui.log_view import LogView
from lora_studio.gui.run.history import RunHistory
from lora_studio.gui.run.loss_chart import LossChart
from lora_studio.gui.run.sample_gallery import SampleGallery

PHASE_WORDS = {
    "loading": "Loading the model…", "caching": "Preparing the images…", "training": "Training…",
    "sampling": "Making sample images…", "saving": "Saving a checkpoint…", "exporting": "Exporting the LoRA…",
}


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


class RunPanel(QWidget):
    run_started = Signal(Path)
    run_finished = Signal(Path, str)  # run dir, completed | stopped | failed
    fix_applied = Signal(dict)  # {"section.key": value} the artist accepted from an error's fix

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.stop_timeout_ms = 60000
        self.lora_dirs: list[Path] | None = None  # None: the export dialog detects them
        self.runner = TrainingProcess(self)
        self._make_run: Callable[[], RunDir] | None = None
        self._runs_dir: Path | None = None
        self._run_dir: Path | None = None  # the run on screen, live or replayed
        self._finished: ev.Finished | None = None
        self._exported: ev.Exported | None = None
        self._rate_window: deque[tuple[float, int]] = deque(maxlen=30)
        self._history: RunHistory | None = None
        self._export_dialog: ExportDialog | None = None
        self._compare_dialog: CompareDialog | None = None
        self._trying_again = False  # launched by "Apply and try again" (no checkpoint to resume from)
        self._build()
        self._connect_runner()
        self._update_buttons()

    def _build(self) -> None:
        self.start_button = QPushButton("Start", self, clicked=self.start, toolTip="Start a new run with the settings")
        self.stop_button = QPushButton("Stop", self, clicked=self.stop,
                                       toolTip="Finish the current step, save a checkpoint and export, then stop")
        self.resume_button = QPushButton("Resume", self, clicked=self.resume)
        self.sample_button = QPushButton("Sample now", self, clicked=lambda: self.runner.send("sample"),
                                         toolTip="Make sample images at the next step")
        self.save_button = QPushButton("Save now", self, clicked=lambda: self.runner.send("save"),
                                       toolTip="Save a resumable checkpoint at the next step")
        self.compare_button = QPushButton(
            "Compare…", self, clicked=self.open_compare_dialog,
            toolTip="See this run's checkpoints side by side at a few LoRA strengths, with and without the "
                    "trigger word, and export the one you like")
        self.export_button = QPushButton("Export…", self, clicked=self.open_export_dialog,
                                         toolTip="Export a checkpoint of this run as a LoRA file")
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.resume_button, self.sample_button, self.save_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.compare_button)
        buttons.addWidget(self.export_button)

        self.status_label = QLabel("Ready.", self)
        self.status_label.setWordWrap(True)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self.banner = Banner(self)
        self.chart = LossChart(self)
        self.gallery = SampleGallery(self)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.chart)
        self.splitter.addWidget(self.gallery)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.log_toggle = QToolButton(self, text="Log", checkable=True, autoRaise=True)
        self.log_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.log_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.log_toggle.toggled.connect(self._toggle_log)
        self.log_view = LogView(self)
        self.log_view.setMaximumHeight(180)
        self.log_view.hide()

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.log_toggle)
        layout.addWidget(self.log_view)

    def _connect_runner(self) -> None:
        r = self.runner
        r.started_event.connect(self._on_started)
        r.status_event.connect(lambda e: self.status_label.setText(e.message or PHASE_WORDS.get(e.phase, e.phase)))
        r.progress_event.connect(self._on_progress)
        r.sample_event.connect(self.gallery.add_sample)
        r.checkpoint_event.connect(lambda e: self.status_label.setText(f"Saved a checkpoint at step {e.step:,}."))
        r.exported_event.connect(self._on_exported)
        r.warning_event.connect(self._show_warning)
        r.error_event.connect(self._show_error)
        r.finished_event.connect(self._on_finished_event)
        r.log_line.connect(self.log_view.append_line)
        r.done.connect(self._on_done)

    # --- public API ---------------------------------------------------------------------------------

    def set_run_source(self, make_run: Callable[[], RunDir] | None) -> None:
        """make_run creates a fresh run folder with its settings (RunDir.create), or raises UserError."""
        self._make_run = make_run
        self._update_buttons()

    def set_runs_dir(self, runs_dir: Path | None) -> None:
        """The project's runs/ folder: where Resume looks for the newest stopped run."""
        self._runs_dir = Path(runs_dir) if runs_dir else None
        # Reopening a project shows where it left off: the newest run's chart and samples.
        if self._runs_dir is not None and not self.runner.is_running() and self._run_dir is None:
            runs = summaries(self._runs_dir)
            if runs:
                self.show_run(runs[0].run_dir)
        self._update_buttons()

    def set_engine_command(self, program: str | None, prefix_args: list[str] | None) -> None:
        """Run something other than `python -m lora_studio` (tests: a fake engine script)."""
        self.runner.program = program or self.runner.program
        self.runner.prefix_args = list(prefix_args) if prefix_args is not None else ["-m", "lora_studio"]

    def attach_history(self, history: RunHistory) -> None:
        """Wire a RunHistory both ways: picking a run shows it here; runs starting or ending refresh it."""
        self._history = history
        history.run_selected.connect(self.show_run)
        self.run_started.connect(history.set_active_run)
        self.run_finished.connect(lambda *_: history.set_active_run(None))
        # The live run's row (started time, step, loss) catches up at each checkpoint, not only at the end.
        self.runner.started_event.connect(lambda _: history.refresh())
        self.runner.checkpoint_event.connect(lambda _: history.refresh())

    def is_training(self) -> bool:
        return self.runner.is_running()

    def current_run(self) -> Path | None:
        return self._run_dir

    def start(self) -> None:
        if self.runner.is_running() or self._make_run is None:
            return
        try:
            run = self._make_run()
        except UserError as e:
            self.banner.show_message("error", e.message, e.hint)
            return
        self._reset_view()
        self._launch(run.path, ["train", str(run.config)])

    def resume(self) -> None:
        run_dir = self._resume_target()
        if self.runner.is_running() or run_dir is None:
            return
        self.show_run(run_dir)  # the chart and samples so far; the engine continues from its checkpoint
        self._launch(run_dir, ["train", str(RunDir(run_dir).config), "--resume"])

    def apply_fix(self, changes: dict) -> None:
        """Write an error's suggested settings into the shown run's own settings (the project's settings
        follow through `fix_applied`), then run it again: from its last checkpoint, or from step 0 in the
        same folder when it has none (a new run per attempt would only leave failed runs behind)."""
        run_dir = self._run_dir
        if self.runner.is_running() or run_dir is None:
            return
        path = RunDir(run_dir).config
        try:
            config_mod.save(with_changes(config_mod.load(path, check=False), changes), path)
        except (OSError, UserError) as err:
            self.banner.show_message("error", f"Could not change the settings in {path}: {err}",
                                     "Check that the run folder still exists and can be written to.")
            return
        self.fix_applied.emit(dict(changes))
        self.show_run(run_dir)
        self._launch(run_dir, ["train", str(path), "--resume"])
        self._trying_again = not RunDir(run_dir).checkpoint_steps()

    def stop(self) -> None:
        if not self.runner.is_running():
            return
        if self.runner.is_stopping():
            self.runner.kill()  # second press: the artist does not want to wait for the checkpoint
            return
        self.runner.stop(self.stop_timeout_ms)
        self.status_label.setText("Stopping: finishing this step and saving a checkpoint…")
        self._update_buttons()

    def shutdown(self) -> None:
        """End a running engine now (the window is closing)."""
        self.runner.kill()

    def show_run(self, run_dir: Path) -> None:
        """Show a past run from its event log: loss chart, samples, progress, and how it ended."""
        run_dir = Path(run_dir)
        if self.runner.is_running():
            if run_dir != self._run_dir:
                self.status_label.setText("Training is running: stop it to look at another run.")
            return
        self._reset_view()
        self._run_dir = run_dir
        points, last_progress, total = [], None, 0
        for e in RunDir(run_dir).read_events():
            match e:
                case ev.Started():
                    total = e.total_steps
                case ev.Progress():
                    points.append((e.step, e.loss))
                    last_progress = e
                case ev.Sample():
                    self.gallery.add_sample(e)
                case ev.Exported():
                    self._exported = e
                case ev.Error():
                    self._show_error(e)
                case ev.Finished():
                    self._finished = e
                    if e.status != "failed":
                        self.banner.dismiss()  # a resumed run got past the error
        self.chart.set_points(points)
        if last_progress is not None:
            self._set_progress(last_progress.step, last_progress.total_steps or total, None, None)
        self.status_label.setText(self._ending_text(self._finished.status if self._finished else "interrupted"))
        self._update_buttons()

    def open_export_dialog(self) -> ExportDialog | None:
        if self._run_dir is None or self.runner.is_running():
            return None
        self._export_dialog = self._show_dialog(ExportDialog(
            self._run_dir, self, self.lora_dirs, program=self.runner.program, prefix_args=self.runner.prefix_args))
        return self._export_dialog

    def open_compare_dialog(self) -> CompareDialog | None:
        if self._run_dir is None or self.runner.is_running():
            return None
        self._compare_dialog = self._show_dialog(CompareDialog(
            self._run_dir, self, program=self.runner.program, prefix_args=self.runner.prefix_args, lora_dirs=self.lora_dirs))
        return self._compare_dialog

    def _show_dialog(self, dialog):
        """Both dialogs can export: the history learns of a new file either way."""
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        if self._history is not None:
            dialog.exported.connect(lambda _e: self._history.refresh())
        dialog.open()
        return dialog

    # --- engine events ------------------------------------------------------------------------------

    def _launch(self, run_dir: Path, args: list[str]) -> None:
        self._run_dir = run_dir
        self._finished = None
        self._trying_again = False
        self._rate_window.clear()
        self.banner.dismiss()
        self.log_view.clear()
        self.progress_bar.setRange(0, 0)  # busy until the first step: loading a model takes a while
        self.status_label.setText("Starting the training engine…")
        self.runner.start(args)
        self._update_buttons()
        self.run_started.emit(run_dir)

    def _on_started(self, e: ev.Started) -> None:
        self._set_progress(e.start_step, e.total_steps, None, None, busy=e.start_step == 0)
        where = f" from step {e.start_step:,}" if e.start_step else ""
        self.status_label.setText(f"Started{where} on {e.device or 'the GPU'}: {e.total_steps:,} steps.")

    def _on_progress(self, e: ev.Progress) -> None:
        self.chart.add_point(e.step, e.loss)
        if self._rate_window and e.step < self._rate_window[-1][1]:
            self._rate_window.clear()
        self._rate_window.append((e.time, e.step))
        (t0, s0), (t1, s1) = self._rate_window[0], self._rate_window[-1]
        rate = (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None
        self._set_progress(e.step, e.total_steps, rate, e.eta_s)

    def _on_exported(self, e: ev.Exported) -> None:
        self._exported = e
        check = "verified ✓" if e.verified else f"{len(e.problems)} problem(s) found" if e.problems else "not verified"
        self.status_label.setText(f"Exported {Path(e.path).name} ({check}).")

    def _on_finished_event(self, e: ev.Finished) -> None:
        self._finished = e

    def _on_done(self, success: bool) -> None:
        # An engine that said it finished and then exited badly is taken at its word about how it ended.
        status = self._finished.status if self._finished is not None else "failed"
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setFormat("")
        self.status_label.setText(self._ending_text(status))
        self._update_buttons()
        if self._run_dir is not None:
            self.run_finished.emit(self._run_dir, status)

    # --- helpers ------------------------------------------------------------------------------------

    def _show_warning(self, e: ev.Warning) -> None:
        if e.code == "nothing_to_resume" and self._trying_again:
            return  # the artist asked to try again from step 0: the engine's "nothing to resume" is no news
        self.banner.show_message("warning", e.message)

    def _show_error(self, e: ev.Error) -> None:
        action = None
        if e.fix and self._run_dir is not None:
            # A run that failed before its first checkpoint has nothing to resume: it starts again from 0.
            label = "Apply and resume" if RunDir(self._run_dir).checkpoint_steps() else "Apply and try again"
            action = (label, lambda: self.apply_fix(e.fix))
        self.banner.show_message("error", e.message, e.hint, action=action)

    def _ending_text(self, status: str) -> str:
        step = self._finished.step if self._finished else 0
        exported = self._exported.path if self._exported else (self._finished.export_path if self._finished else "")
        saved = f" Saved {Path(exported).name}." if exported else ""
        if status == "completed":
            return f"Finished: {step:,} steps.{saved}"
        if status == "stopped":
            return f"Stopped at step {step:,}.{saved} Resume continues from there."
        if self._run_dir is not None and RunDir(self._run_dir).checkpoint_steps():
            return "Training did not finish. Resume continues from the last checkpoint."
        return "Training did not finish."

    def _set_progress(self, step: int, total: int, rate: float | None, eta: float | None, busy: bool = False) -> None:
        if busy or total <= 0:
            self.progress_bar.setRange(0, 0)
            return
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(min(step, total))
        self.progress_bar.setFormat(progress_text(step, total, rate, eta))

    def _reset_view(self) -> None:
        self.chart.clear()
        self.gallery.clear()
        self.banner.dismiss()
        self.log_view.clear()
        self._finished = self._exported = None
        self._rate_window.clear()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")

    def _resume_target(self) -> Path | None:
        if self._run_dir is not None and summarize(RunDir(self._run_dir)).resumable:
            return self._run_dir
        runs = summaries(self._runs_dir)
        return next((r.run_dir for r in runs if r.resumable), None)

    def _update_buttons(self) -> None:
        running = self.runner.is_running()
        stopping = running and self.runner.is_stopping()
        resume_dir = None if running else self._resume_target()
        self.start_button.setEnabled(not running and self._make_run is not None)
        self.stop_button.setEnabled(running)
        self.stop_button.setText("Force stop" if stopping else "Stop")
        self.resume_button.setEnabled(resume_dir is not None)
        self.resume_button.setToolTip(f"Continue {resume_dir.name} from its last checkpoint" if resume_dir
                                      else "No stopped run to continue")
        self.sample_button.setEnabled(running and not stopping)
        self.save_button.setEnabled(running and not stopping)
        can_export = not running and self._run_dir is not None and bool(RunDir(self._run_dir).checkpoint_steps())
        self.export_button.setEnabled(can_export)
        self.compare_button.setEnabled(can_export)

    def _toggle_log(self, shown: bool) -> None:
        self.log_view.setVisible(shown)
        self.log_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
