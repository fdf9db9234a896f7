"""The Train tab: start / stop / resume a run, watch its progress, loss and samples, export the result.

Everything shown is the RunModel's state (gui/run/run_model.py): the engine's events folded live, or a
past run's event log folded the same way, so a reopened run looks the way it did while it trained. The
widgets render from that state and keep none of their own. Errors go to a banner in the panel, never a
modal dialog: the artist should be able to read the message and the log together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QSplitter, QToolButton, QVBoxLayout, QWidget

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.errors import UserError
from lora_studio.core.fit_advice import with_changes
from lora_studio.core.run_state import NO_CHECKPOINT, progress_text
from lora_studio.core.runs import RunDir, list_runs, summaries
from lora_studio.gui.banner import Banner
from lora_studio.gui.compare.dialog import CompareDialog
from lora_studio.gui.engine_process import EngineBusy, EngineProcess
from lora_studio.gui.export_dialog import ExportDialog
from lora_studio.gui.log_view import LogView
from lora_studio.gui.run.history import RunHistory
from lora_studio.gui.run.loss_chart import LossChart
from lora_studio.gui.run.run_model import RunModel
from lora_studio.gui.run.sample_gallery import SampleGallery
from lora_studio.gui.settings.places import say


class RunPanel(QWidget):
    run_started = Signal(Path)
    run_finished = Signal(Path, str)  # run dir, completed | stopped | failed
    fix_applied = Signal(dict)  # {"section.key": value} the artist accepted from an error's fix
    ended = Signal(str, str, bool)  # a run or a comparison ended: title, what it says, whether it failed

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.stop_timeout_ms = 60000
        self.lora_dirs: list[Path] | None = None  # None: the export dialog detects them
        self.run = RunModel(self)
        self.runner = EngineProcess(self)
        self._make_run: Callable[[], RunDir] | None = None
        self._runs_dir: Path | None = None
        self._history: RunHistory | None = None
        self._export_dialog: ExportDialog | None = None
        self._compare_dialog: CompareDialog | None = None
        self._banner_shows: tuple | None = None  # the state's (error, warnings) the banner last showed
        self._build()
        self._connect_runner()
        self.run.changed.connect(self._render)
        self._render(None)

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
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.show_folder_button = QPushButton("Show in folder", self, clicked=self.show_export_folder,
                                              toolTip="Open the folder that holds the LoRA file")
        self.show_folder_button.hide()
        status_row = QHBoxLayout()
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.show_folder_button, 0, Qt.AlignmentFlag.AlignTop)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self.banner = Banner(self)
        self.chart = LossChart(self)
        self.gallery = SampleGallery(self)
        # The chart above the samples, both the panel's full width: the samples are what the artist watches
        # (a row per sample step, one picture per prompt, so they need width for the prompts side by side),
        # and a loss curve reads well wide and short. Side by side, at the window's default size, the
        # samples got room for one picture per row.
        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.addWidget(self.chart)
        self.splitter.addWidget(self.gallery)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([220, 440])
        self.log_toggle = QToolButton(self, text="Log", checkable=True, autoRaise=True)
        self.log_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.log_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.log_toggle.toggled.connect(self._toggle_log)
        self.log_view = LogView(self)
        self.log_view.setMaximumHeight(180)
        self.log_view.hide()

        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addLayout(status_row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.log_toggle)
        layout.addWidget(self.log_view)

    def _connect_runner(self) -> None:
        r = self.runner
        r.event.connect(self.run.apply)
        r.log_line.connect(self.log_view.append_line)
        r.done.connect(self._on_done)

    # --- public API ---------------------------------------------------------------------------------

    def set_run_source(self, make_run: Callable[[], RunDir] | None) -> None:
        """make_run creates a fresh run folder with its settings (RunDir.create), or raises UserError."""
        self._make_run = make_run
        self._update_buttons()

    def set_runs_dir(self, runs_dir: Path | None) -> None:
        """The project's runs/ folder. Another project's shows where that project left off: its newest run,
        or nothing at all; never the run of the project before."""
        runs_dir = Path(runs_dir) if runs_dir else None
        changed = runs_dir != self._runs_dir
        self._runs_dir = runs_dir
        if changed and not self.runner.is_running():
            runs = list_runs(runs_dir)
            self.log_view.clear()  # the last project's engine said it
            self.run.show(runs[0] if runs else None)
        self._update_buttons()

    def set_engine_command(self, program: str | None, prefix_args: list[str] | None) -> None:
        """Run something other than `python -m lora_studio` (tests: a fake engine script)."""
        self.runner.program = program or self.runner.program
        self.runner.prefix_args = list(prefix_args) if prefix_args is not None else ["-m", "lora_studio"]

    def attach_history(self, history: RunHistory) -> None:
        """Wire a RunHistory both ways: picking a run shows it here; the run training here is its live row."""
        self._history = history
        history.run_selected.connect(self.show_run)
        history.follow(self.run)

    def is_training(self) -> bool:
        return self.runner.is_running()

    def current_run(self) -> Path | None:
        return self.run.run_dir

    def start(self) -> None:
        if self.runner.is_running() or self._make_run is None:
            return
        try:
            run = self._make_run()
        except UserError as e:
            self.banner.show_message("error", e.message, e.hint)
            return
        self._launch(run, ["train", str(run.config)], fresh=True)

    def resume(self) -> None:
        run = self._resume_target()
        if self.runner.is_running() or run is None:
            return
        # The chart and samples so far stay; the engine continues from its checkpoint.
        self._launch(run, ["train", str(run.config), "--resume"], fresh=False)

    def apply_fix(self, changes: dict) -> None:
        """Write an error's suggested settings into the shown run's own settings (the project's settings
        follow through `fix_applied`), then run it again: from its last checkpoint, or from step 0 in the
        same folder when it has none (a new run per attempt would only leave failed runs behind)."""
        run = self.run.run
        if self.runner.is_running() or run is None:
            return
        try:
            config_mod.save(with_changes(config_mod.load(run.config, check=False), changes), run.config)
        except (OSError, UserError) as err:
            self.banner.show_message("error", f"Could not change the settings in {run.config}: {err}",
                                     "Check that the run folder still exists and can be written to.")
            return
        self.fix_applied.emit(dict(changes))
        self._launch(run, ["train", str(run.config), "--resume"], fresh=False)

    def stop(self) -> None:
        if not self.runner.is_running():
            return
        if self.runner.is_stopping():
            self.runner.kill()  # second press: the artist does not want to wait for the checkpoint
            return
        self.runner.stop(self.stop_timeout_ms)
        self.run.say("Stopping: finishing this step and saving a checkpoint…")

    def shutdown(self) -> None:
        """End a running engine now (the window is closing)."""
        self.runner.kill()

    def show_run(self, run_dir: Path) -> None:
        """Show a past run from its event log: loss chart, samples, progress, and how it ended."""
        run = RunDir(run_dir)
        if self.runner.is_running():
            if run != self.run.run:
                self.run.say("Training is running: stop it to look at another run.")
            return
        self.run.show(run)

    def export_folder(self) -> Path | None:
        """The folder of the shown run's LoRA file, once there is one (and not while it trains)."""
        path = self.run.state.export_path
        if not path or self.runner.is_running() or not Path(path).parent.is_dir():
            return None
        return Path(path).parent

    def show_export_folder(self) -> None:
        folder = self.export_folder()
        if folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def open_export_dialog(self) -> ExportDialog | None:
        if self.run.run is None or self.runner.is_running():
            return None
        self._export_dialog = self._show_dialog(ExportDialog(
            self.run.run.path, self, self.lora_dirs, program=self.runner.program, prefix_args=self.runner.prefix_args))
        return self._export_dialog

    def open_compare_dialog(self) -> CompareDialog | None:
        if self.run.run is None or self.runner.is_running():
            return None
        self._compare_dialog = self._show_dialog(CompareDialog(
            self.run.run.path, self, program=self.runner.program, prefix_args=self.runner.prefix_args, lora_dirs=self.lora_dirs))
        self._compare_dialog.ended.connect(self._comparison_ended)
        return self._compare_dialog

    def _show_dialog(self, dialog):
        """Both dialogs can export: the history learns of a new file either way."""
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        if self._history is not None:
            dialog.exported.connect(lambda _e: self._history.refresh())
        dialog.open()
        return dialog

    # --- the engine ---------------------------------------------------------------------------------

    def _launch(self, run: RunDir, args: list[str], *, fresh: bool) -> bool:
        try:
            self.runner.start(args)
        except EngineBusy as e:  # a comparison or an export of this project is still at work
            self.banner.show_message("error", e.message, e.hint)
            return False
        self.log_view.clear()
        self.run.begin(run, fresh=fresh, notice="Starting the training engine…")
        self._update_buttons()
        self.run_started.emit(run.path)
        return True

    def _on_done(self, _success: bool) -> None:
        # An engine that said it finished and then exited badly is taken at its word about how it ended.
        finished = self.run.state.finished
        status = finished.status if finished is not None else "failed"
        self.run.end()
        if self.run.run_dir is not None:
            self.run_finished.emit(self.run.run_dir, status)
            title = {"completed": "Training finished", "stopped": "Training stopped"}.get(status, "Training failed")
            error = self.run.state.error
            message = self.status_label.text() + (f" {error.message}" if status == "failed" and error else "")
            self.ended.emit(title, message, status == "failed")

    def _comparison_ended(self, status: str, line: str) -> None:
        title = {"completed": "Comparison finished", "stopped": "Comparison stopped"}.get(status, "Comparison failed")
        self.ended.emit(title, line, status == "failed")

    # --- rendering the run --------------------------------------------------------------------------

    def _render(self, event: ev.Event | None) -> None:
        self._show_status()
        self.show_folder_button.setVisible(self.export_folder() is not None)
        self._show_progress()
        self._show_losses()
        self._show_samples()
        self._show_problems(force=event is None)
        self._update_buttons()

    def _show_status(self) -> None:
        model, state = self.run, self.run.state
        if model.live and state.finished is None:
            text = model.notice or state.activity or "Starting the training engine…"
        elif model.run is None:
            text = "Ready."
        else:
            text = model.notice or state.outcome_text()
        self.status_label.setText(say(text))  # an engine error names settings by key; the app by label

    def _show_progress(self) -> None:
        model, state, bar = self.run, self.run.state, self.progress_bar
        if model.live and state.finished is None and not state.progressed and state.start_step == 0:
            bar.setRange(0, 0)  # busy until the first step: loading a model takes a while
            return
        if state.total_steps <= 0:
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("")
            return
        running = model.live and state.finished is None and not self.runner.is_stopping()
        bar.setRange(0, state.total_steps)
        bar.setValue(min(state.step, state.total_steps))
        bar.setFormat(progress_text(state.step, state.total_steps, state.rate, state.eta_s if running else None))

    def _show_losses(self) -> None:
        shown, wanted = self.chart.points(), self.run.state.losses
        n = len(shown)
        if shown == wanted[:n]:
            for step, loss in wanted[n:]:
                self.chart.add_point(step, loss)
        else:
            self.chart.set_points(wanted)
        self.chart.set_validation(self.run.state.validation)

    def _show_samples(self) -> None:
        def key(s: ev.Sample) -> tuple:
            return s.step, s.index, s.path

        shown = {key(s) for s in self.gallery.samples()}
        wanted = self.run.state.samples
        if not shown <= {key(s) for s in wanted}:
            self.gallery.clear()
            shown = set()
        for sample in wanted:
            if key(sample) not in shown:
                self.gallery.add_sample(sample)

    def _show_problems(self, force: bool) -> None:
        """The banner says the run's error, else its latest warning with the earlier ones listed under it.
        It changes only when they do, so the artist's ✕ and the panel's own messages stay as they are."""
        state = self.run.state
        warnings = [w for w in state.warnings if w.code != "nothing_to_resume"]  # the app only resumes runs
        shows = (state.error, len(warnings))                                       # that have a checkpoint
        if shows == self._banner_shows and not force:
            return
        self._banner_shows = shows
        e = state.error
        if e is not None:
            action = None
            if e.fix and self.run.run is not None:
                # A run that failed before its first checkpoint has nothing to resume: it starts again from 0.
                label = "Apply and resume" if state.checkpoints else "Apply and try again"
                action = (label, lambda fix=e.fix: self.apply_fix(fix))
            self.banner.show_message("error", e.message, e.hint, action=action, earlier=[w.message for w in warnings])
        elif warnings:
            self.banner.show_message("warning", warnings[-1].message, earlier=[w.message for w in warnings[:-1]])
        else:
            self.banner.dismiss()

    def _resume_target(self) -> RunDir | None:
        if self.run.run is not None and self.run.state.resumable:
            return self.run.run
        return next((RunDir(r.run_dir) for r in summaries(self._runs_dir) if r.resumable), None)

    def _update_buttons(self) -> None:
        running = self.runner.is_running()
        stopping = running and self.runner.is_stopping()
        resume = None if running else self._resume_target()
        self.start_button.setEnabled(not running and self._make_run is not None)
        self.stop_button.setEnabled(running)
        self.stop_button.setText("Force stop" if stopping else "Stop")
        self.resume_button.setEnabled(resume is not None)
        self.resume_button.setToolTip(self._resume_tip(resume))
        self.sample_button.setEnabled(running and not stopping)
        self.save_button.setEnabled(running and not stopping)
        can_export = not running and self.run.run is not None and bool(self.run.state.checkpoints)
        self.export_button.setEnabled(can_export)
        self.compare_button.setEnabled(can_export)

    def _resume_tip(self, resume: RunDir | None) -> str:
        if resume is not None:
            return f"Continue {resume.name} from its last checkpoint"
        state = self.run.state
        if not self.runner.is_running() and self.run.run is not None and state.began and state.status != "completed" and not state.checkpoints:
            return NO_CHECKPOINT
        return "No stopped run to continue"

    def _toggle_log(self, shown: bool) -> None:
        self.log_view.setVisible(shown)
        self.log_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
