"""Choose the result: the run's checkpoints side by side at a few LoRA strengths, with and without the trigger.

The engine makes the images (`lora_studio compare RUN_DIR ...`, one `compare_cell` event per image as it is
written) and the grid fills as they arrive. Rows are the base model (the baseline), then each checkpoint;
columns are the strengths, grouped by trigger word on / off. Reading down a column shows what training
did; reading across shows strength, and whether the style bleeds into prompts without the trigger word.
One prompt at a time (tabs): several prompts side by side make a grid too wide to read.

Every comparison stays in its own folder of the run (core/runs.py), with its grid file; the newest is
shown when the dialog opens, so a comparison is never lost.

The dialog assembles its parts and runs the engine: the choices above (compare_controls), the grid on the
left (compare_grid_pane), the picked image on the right (compare_preview), and what was made
(compare_results), which all of them read.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontDatabase
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QLabel, QProgressBar, QSplitter, QVBoxLayout, QWidget,
)

from lora_studio.core import events as ev
from lora_studio.core.ranking import read_ranking
from lora_studio.core.runs import RunDir, ranking_file
from lora_studio.gui.compare.controls import CompareControls
from lora_studio.gui.compare.grid import (
    HINT_LINES, MAX_STRENGTH, CellKey, SavedGrid, cell_key, is_base, load_saved_grid, read_run_settings,
)
from lora_studio.gui.compare.grid_pane import CompareGridPane
from lora_studio.gui.compare.preview import ComparePreviewPane
from lora_studio.gui.compare.results import CompareResults, images_text
from lora_studio.gui.engine_process import EngineBusy, EngineProcess
from lora_studio.gui.export_dialog import ExportDialog
from lora_studio.gui.images import ImageLoader

SCROLL_BAR_ROOM = 24  # beside the grid, for its pane's vertical scroll bar
PREVIEW_ROOM = 340  # what the large view keeps when the window is too narrow for the whole grid


class CompareDialog(QDialog):
    exported = Signal(object)  # ev.Exported, passed on from the export dialog it opened
    ended = Signal(str, str)  # completed | stopped | failed, and the line that says so

    def __init__(
        self,
        run_dir: Path,
        parent: QWidget | None = None,
        *,
        program: str | None = None,
        prefix_args: list[str] | None = None,
        lora_dirs: list[Path] | None = None,
    ):
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.lora_dirs = lora_dirs
        self.export_dialog: ExportDialog | None = None
        self.setWindowTitle(f"Compare checkpoints — {self.run_dir.name}")
        self._settings = read_run_settings(self.run_dir)
        self._steps = list(RunDir(self.run_dir).checkpoint_steps())
        self._program, self._prefix_args = program, prefix_args
        self._results = CompareResults()
        self._phase = ""
        self._folder: Path | None = None
        self._saved: SavedGrid | None = None
        self._error: ev.Error | None = None
        self._finished: ev.Finished | None = None
        self._close_when_done = False
        self._selected: CellKey | None = None
        self._loader = ImageLoader(self)  # thumbnails for the grid, large images for the preview
        self._fit_timer = QTimer(self, singleShot=True, interval=0, timeout=self._fit_splitter)

        self._process = EngineProcess(self, program=program, prefix_args=prefix_args)
        self._process.event.connect(self._on_event)
        self._process.done.connect(self._on_done)

        self._build()
        self.controls.validate()
        self._saved = load_saved_grid(self.run_dir)
        if self._saved is not None:
            self._show_saved(self._saved)
        else:
            self._rebuild()
            self._set_status("No comparison yet: choose checkpoints and strengths, then Generate." if self._steps
                             else "This run has no checkpoint yet: train until one is saved, then compare.")
        self._show_ranking()
        self.resize(1180, 800)

    # --- layout -------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.controls = CompareControls(self._steps, self._settings, self)
        self.controls.changed.connect(self._update_controls)
        self.controls.generate_button.clicked.connect(self.generate)

        self.error_frame = QFrame(self)
        self.error_frame.setObjectName("compareError")
        self.error_frame.setStyleSheet("QFrame#compareError { background: #fde3e1; border: 1px solid #e3a29c; "
                                       "border-radius: 4px; } QLabel { color: #5c0b07; }")
        self.error_label = QLabel(self.error_frame)
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hint_label = QLabel(self.error_frame)
        self.hint_label.setWordWrap(True)
        self.hint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        error_layout = QVBoxLayout(self.error_frame)
        error_layout.addWidget(self.error_label)
        error_layout.addWidget(self.hint_label)
        self.error_frame.hide()

        self.grid_pane = CompareGridPane(self._results, self._settings.trigger, bool(self._steps), self._loader, self)
        self.grid_pane.prompt_changed.connect(self._on_prompt_changed)
        self.grid_pane.reshaped.connect(self._fit_timer.start)  # new cells are laid out (and sized) next turn
        self.grid_pane.grid.clicked.connect(self.select_cell)
        self.preview_pane = ComparePreviewPane(self._settings.trigger, self._loader, self)
        self.preview_pane.export_button.clicked.connect(self.open_export_dialog)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.grid_pane)
        self.splitter.addWidget(self.preview_pane)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setChildrenCollapsible(False)

        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumWidth(240)
        self.progress_bar.hide()
        self.buttons = QDialogButtonBox(self)
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_button.setToolTip("Show this comparison's images in the file manager")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self._open_folder)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.close_button.clicked.connect(self.reject)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status_label, 1)
        bottom.addWidget(self.progress_bar)
        bottom.addWidget(self.buttons)

        layout = QVBoxLayout(self)
        layout.addWidget(self.controls)
        layout.addWidget(self.error_frame)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(bottom)

        # The parts' widgets under the dialog's own names, as callers and tests reach them.
        c, g, p = self.controls, self.grid_pane, self.preview_pane
        self.checkpoint_list, self.strengths_edit, self.strengths_problem = (
            c.checkpoint_list, c.strengths_edit, c.strengths_problem)
        self.trigger_check, self.sampling_steps, self.prompts_edit = c.trigger_check, c.sampling_steps, c.prompts_edit
        self.summary_label, self.generate_button = c.summary_label, c.generate_button
        self.prompt_tabs, self.prompt_label, self.grid, self.empty_label = (
            g.prompt_tabs, g.prompt_label, g.grid, g.empty_label)
        self.preview_label, self.caption_label, self.export_button = p.preview_label, p.caption_label, p.export_button

    # --- public API ---------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._process.is_running()

    def selected_step(self) -> int | None:
        """The checkpoint of the picked image; None for none picked or the base model."""
        return self._selected[1] if self._selected is not None and self._selected[1] > 0 else None

    def selected_cell(self) -> ev.CompareCell | None:
        return self._results.cells.get(self._selected) if self._selected is not None else None

    def image_count(self) -> int:
        return len(self._results.cells)

    def prompt_count(self) -> int:
        return self.grid_pane.prompt_count()

    def compare_args(self) -> list[str] | None:
        """The engine's command line for the current choices, or None while they are not valid."""
        return self.controls.compare_args(self.run_dir)

    def generate(self) -> None:
        """Generate, or (while running) Stop; a second Stop ends the engine without waiting."""
        if self._process.is_running():
            self.stop()
            return
        args, plan = self.compare_args(), self.controls.plan()
        if args is None or plan is None:
            return
        try:
            self._process.start(args)
        except EngineBusy as e:  # training or an export of this project is at work: the grid stays as it is
            self._on_error(ev.Error(e.code, e.message, e.hint))
            return
        self._results.start(plan)
        self.grid_pane.forget_images()
        self._phase = ""
        self._folder = self._saved = None
        self._error = self._finished = None
        self._show_ranking()  # the old grid's ranking is not this one's
        self._select(None)
        self.error_frame.hide()
        self._rebuild()
        self.grid.set_waiting(True)
        self._set_status("Starting the engine: loading the base model takes a little while…")
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        self._update_controls()

    def stop(self) -> None:
        if not self._process.is_running():
            return
        if self._process.is_stopping():
            self._process.kill()
            return
        self._process.stop()
        self._set_status("Stopping after the image being made…")
        self._update_controls()

    def select_cell(self, cell: ev.CompareCell) -> None:
        self._select(cell_key(cell))

    def open_export_dialog(self) -> ExportDialog | None:
        step = self.selected_step()
        if step is None or self._process.is_running():
            return None
        dialog = ExportDialog(self.run_dir, self, self.lora_dirs, program=self._program,
                              prefix_args=self._prefix_args, step=step)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.exported.connect(self.exported)
        self.export_dialog = dialog
        dialog.open()
        return dialog

    def reject(self) -> None:
        # Closing while images are being made: stop between images (the ones made stay), then close.
        # Closing again does not wait.
        if self._process.is_running() and not self._close_when_done:
            self._close_when_done = True
            self.stop()
            return
        self._process.kill()
        super().reject()

    def wait_for_images(self, msecs: int = 5000) -> bool:
        return self._loader.wait(msecs)

    # --- engine events ------------------------------------------------------------------------------

    def _on_event(self, event: ev.Event) -> None:
        match event:
            case ev.CompareCell():
                self._on_cell(event)
            case ev.Status():
                self._on_status(event)
            case ev.Error():
                self._on_error(event)
            case ev.Finished():
                self._finished = event

    def _on_cell(self, cell: ev.CompareCell) -> None:
        if not Path(cell.path).is_absolute():
            cell = replace(cell, path=str(self.run_dir / cell.path))
        key = self._results.add(cell)
        self._folder = Path(cell.path).parent
        self.open_button.setEnabled(True)
        self.grid_pane.show_new_cell(cell, key, self._selected, self._process.is_running())
        if key == self._selected:
            self._select(key)
        self._show_progress()

    def _on_status(self, event: ev.Status) -> None:
        self._phase = event.message or event.phase.capitalize()
        self._show_progress()

    def _on_error(self, event: ev.Error) -> None:
        self._error = event
        self.error_label.setText(f"<b>✖ {html.escape(event.message, quote=False)}</b>")
        hint = event.hint.strip()
        multi_line = "\n" in hint
        if multi_line:
            hint = "\n".join(hint.splitlines()[-HINT_LINES:])
        self.hint_label.setFont(QFontDatabase.systemFont(
            QFontDatabase.SystemFont.FixedFont if multi_line else QFontDatabase.SystemFont.GeneralFont))
        self.hint_label.setText(hint)
        self.hint_label.setVisible(bool(hint))
        self.error_frame.show()

    def _on_done(self, success: bool) -> None:
        status = self._finished.status if self._finished is not None else "failed"
        if not success and status != "stopped":
            status = "failed"
        self.progress_bar.hide()
        self.grid.set_waiting(False)
        made = self._results.made
        if status == "completed":
            self._set_status(f"Done: {images_text(made)}. Click one to see it larger, then export the "
                             "checkpoint you like.")
        elif status == "stopped":
            self._set_status(f"Stopped after {self._results.made_text()}. The images made are kept.")
        else:
            self._set_status(f"The comparison did not finish ({self._results.made_text()} made)." if made
                             else "The comparison did not finish.")
        self._update_controls()
        self.ended.emit(status, self.status_label.text())
        if self._close_when_done and self.isVisible():
            super().reject()

    # --- view ---------------------------------------------------------------------------------------

    def _show_saved(self, saved: SavedGrid) -> None:
        self._results.load(saved.cells)
        self._folder = saved.folder
        self.open_button.setEnabled(True)
        strengths = sorted({round(c.strength, 4) for c in saved.cells if not is_base(c)})
        if strengths and all(0 < s <= MAX_STRENGTH for s in strengths):
            self.controls.show_strengths(strengths)
        self._rebuild()
        when = dt.datetime.fromtimestamp(saved.saved_at).strftime("%d %b %Y, %H:%M").lstrip("0")
        unfinished = " (it was stopped before the end)" if saved.status in ("stopped", "failed", "running") else ""
        self._set_status(f"The comparison of {when}: {images_text(len(saved.cells))}{unfinished}. "
                         "Generate makes a new one.")

    def _show_ranking(self) -> None:
        """The grid's own ranking (`compare --rank`) when it has one, else the one its run made at its end."""
        rec = read_ranking(ranking_file(self._folder)) if self._folder is not None else None
        self.grid_pane.set_recommendation(rec or read_ranking(RunDir(self.run_dir).ranking))

    def _rebuild(self) -> None:
        self.grid_pane.rebuild(self._selected, self._process.is_running())

    def _on_prompt_changed(self, index: int) -> None:
        if self._selected is not None:
            _p, step, trigger, strength = self._selected
            self._selected = (index, step, trigger, strength)  # the same place in the other prompt's grid
        self._rebuild()
        self._select(self._selected)

    def _select(self, key: CellKey | None) -> None:
        self._selected = key
        self.grid.select(key)
        self._update_export_button()
        self.preview_pane.show_cell(self.selected_cell(), picked=key is not None)

    def _show_progress(self) -> None:
        if not self._process.is_running() or self._process.is_stopping():
            return
        made, total = self._results.made, self._results.total()
        if made == 0:
            self._set_status(f"{self._phase}…" if self._phase and not self._phase.endswith("…") else self._phase)
            return
        # Once images arrive the count says it all (the engine's own "cell n of N" would only repeat it).
        if total >= made:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(made)
        else:
            self.progress_bar.setRange(0, 0)
        self._set_status(self._results.made_text())

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _update_controls(self) -> None:
        running = self._process.is_running()
        self.controls.set_running(running, running and self._process.is_stopping())
        self._update_export_button()

    def _update_export_button(self) -> None:
        self.preview_pane.show_export(self.selected_step(), self._selected is not None, self._process.is_running())

    def _fit_splitter(self) -> None:
        """Give the grid the width it needs (when the window has it); the large view takes the rest."""
        handles = self.splitter.handleWidth() * (self.splitter.count() - 1)
        total = (self.splitter.width() if self.splitter.isVisible() else self.width() - 24) - handles
        want = self.grid.sizeHint().width() + SCROLL_BAR_ROOM
        left = max(280, min(want, total - PREVIEW_ROOM))
        self.splitter.setSizes([left, max(0, total - left)])

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.grid.isVisible():
            self._fit_splitter()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        # Fit again: left to itself, the splitter shares a new width by its stretch factors, which leaves
        # empty columns beside the grid when the window grows and hides some of it when the window shrinks.
        if self.grid.isVisible():
            self._fit_splitter()

    def _open_folder(self) -> None:
        if self._folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._folder)))
