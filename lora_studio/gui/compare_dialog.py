"""Choose the result: the run's checkpoints side by side at a few LoRA strengths, with and without the trigger.

The engine makes the images (`lora_studio compare RUN_DIR ...`, one `compare_cell` event per image as it is
written) and the grid fills as they arrive. Rows are the base model (the baseline), then each checkpoint;
columns are the strengths, grouped by trigger word on / off. Reading down a column shows what training
did; reading across shows strength, and whether the style bleeds into prompts without the trigger word.
One prompt at a time (tabs): several prompts side by side make a grid too wide to read.

Every comparison stays in RUN_DIR/compare/<id>/ with its grid.json; the newest is shown when the dialog
opens, so a comparison is never lost.
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontDatabase, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QFrame, QGroupBox,
    QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QProgressBar, QPushButton, QScrollArea,
    QPlainTextEdit, QSizePolicy, QSpinBox, QSplitter, QTabBar, QVBoxLayout, QWidget,
)

from lora_studio.core import events as ev
from lora_studio.gui.export_dialog import ExportDialog
from lora_studio.gui.run_history import checkpoint_steps
from lora_studio.gui.runner import TrainingProcess
from lora_studio.gui.sample_gallery import ImageLoader
from lora_studio.gui.compare_grid import (
    DEFAULT_STRENGTHS, HINT_LINES, MAX_STRENGTH, PREVIEW_SIZE, THUMB_SIZE, CellKey, Column, CompareGrid, Plan,
    SavedGrid, cell_key, format_strength, group_title, has_trigger_variant, is_base, load_saved_grid,
    parse_strengths, read_run_settings,
)


class CompareDialog(QDialog):
    exported = Signal(object)  # ev.Exported, passed on from the export dialog it opened

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
        self._program, self._prefix_args = program, prefix_args
        self._cells: dict[CellKey, ev.CompareCell] = {}
        self._plan: Plan | None = None
        self._made = 0  # images the running (or last) comparison made
        self._phase = ""
        self._folder: Path | None = None
        self._saved: SavedGrid | None = None
        self._error: ev.Error | None = None
        self._finished: ev.Finished | None = None
        self._close_when_done = False
        self._selected: CellKey | None = None
        self._structure: tuple | None = None
        self._images: dict[str, QImage] = {}  # decoded thumbnails by path
        self._requested: set[str] = set()
        self._loader = ImageLoader(self)
        self._loader.loaded.connect(self._on_image)
        self._fit_timer = QTimer(self, singleShot=True, interval=0, timeout=self._fit_splitter)

        self._process = TrainingProcess(self, program=program, prefix_args=prefix_args)
        self._process.compare_cell_event.connect(self._on_cell)
        self._process.status_event.connect(self._on_status)
        self._process.error_event.connect(self._on_error)
        self._process.finished_event.connect(lambda e: setattr(self, "_finished", e))
        self._process.done.connect(self._on_done)

        self._build()
        self._validate()
        self._saved = load_saved_grid(self.run_dir)
        if self._saved is not None:
            self._show_saved(self._saved)
        else:
            self._rebuild()
            self._set_status("No comparison yet: choose checkpoints and strengths, then Generate." if self._steps
                             else "This run has no checkpoint yet: train until one is saved, then compare.")
        self.resize(1180, 800)

    # --- layout -------------------------------------------------------------------------------------

    def _build(self) -> None:
        self._steps = checkpoint_steps(self.run_dir)
        self.checkpoint_list = QListWidget(self)
        self.checkpoint_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        for step in self._steps:
            item = QListWidgetItem(f"Step {step:,}" + ("  (newest)" if step == self._steps[-1] else ""))
            item.setData(Qt.ItemDataRole.UserRole, step)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.checkpoint_list.addItem(item)
        self.checkpoint_list.setFixedHeight(92)
        self.checkpoint_list.setFixedWidth(190)
        self.checkpoint_list.itemChanged.connect(self._validate)
        checkpoints_box = QGroupBox("Checkpoints", self)
        QVBoxLayout(checkpoints_box).addWidget(self.checkpoint_list)

        self.strengths_edit = QLineEdit(", ".join(format_strength(s) for s in DEFAULT_STRENGTHS), self)
        self.strengths_edit.setPlaceholderText("0.5, 1.0")
        self.strengths_edit.setToolTip("LoRA strengths to try, separated by commas. 1.0 is the LoRA as trained; "
                                       "lower values apply it more gently.")
        self.strengths_edit.textChanged.connect(self._validate)
        self.strengths_edit.setMinimumWidth(220)
        self.strengths_problem = QLabel(self)
        self.strengths_problem.setObjectName("problem")
        self.strengths_problem.hide()
        word = self._settings.trigger
        self.trigger_check = QCheckBox(f"Also without the trigger word “{word}”" if word
                                       else "Also without the trigger word", self)
        if word:
            self.trigger_check.setChecked(True)
            self.trigger_check.setToolTip("Make each image a second time with the trigger word taken out of the "
                                          "prompt, to see whether the style bleeds into every prompt.")
        else:
            self.trigger_check.setChecked(False)
            self.trigger_check.setEnabled(False)
            self.trigger_check.setToolTip("This run has no trigger word (Settings → Trigger word), so the prompts "
                                          "are used as written.")
        self.trigger_check.toggled.connect(self._validate)
        self.sampling_steps = QSpinBox(self)
        self.sampling_steps.setRange(1, 1000)
        self.sampling_steps.setValue(self._settings.sampling_steps)
        self.sampling_steps.setToolTip(f"Denoising steps per image. The run's samples used "
                                       f"{self._settings.sampling_steps}; fewer is faster, more is finer.")
        self.sampling_steps.valueChanged.connect(self._validate)
        self.sampling_steps.setMinimumWidth(90)
        self.prompts_edit = QPlainTextEdit("\n".join(self._settings.prompts), self)
        self.prompts_edit.setPlaceholderText(f"One prompt a line, e.g.\n{word or 'zzmystyle'}, a lighthouse on a cliff")
        self.prompts_edit.setToolTip("The prompts of the grid, one a line (the run's sample prompts to start with). "
                                     "Put the trigger word in as its own tag, e.g. “zzmystyle, a lighthouse”.")
        self.prompts_edit.setFixedHeight(92)
        self.prompts_edit.setMinimumWidth(260)
        self.prompts_edit.textChanged.connect(self._validate)
        prompts_box = QGroupBox("Prompts", self)
        QVBoxLayout(prompts_box).addWidget(self.prompts_edit)

        images_box = QGroupBox("Images", self)
        form = QFormLayout(images_box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        strengths_col = QVBoxLayout()
        strengths_col.setSpacing(2)
        strengths_col.addWidget(self.strengths_edit)
        strengths_col.addWidget(self.strengths_problem)
        form.addRow("LoRA strengths:", strengths_col)
        form.addRow("", self.trigger_check)
        form.addRow("Denoising steps:", self.sampling_steps)

        self.summary_label = QLabel(self)
        self.summary_label.setObjectName("muted")
        self.summary_label.setAlignment(Qt.AlignmentFlag.AlignRight)
        self.generate_button = QPushButton("Generate", self, clicked=self.generate)
        self.generate_button.setObjectName("primary")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumWidth(130)
        go = QVBoxLayout()
        go.addStretch(1)
        go.addWidget(self.summary_label)
        go.addWidget(self.generate_button, 0, Qt.AlignmentFlag.AlignRight)

        top = QHBoxLayout()
        top.addWidget(checkpoints_box)
        top.addWidget(images_box)
        top.addWidget(prompts_box, 1)
        top.addLayout(go)

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

        self.prompt_tabs = QTabBar(self)
        self.prompt_tabs.setExpanding(False)
        self.prompt_tabs.setElideMode(Qt.TextElideMode.ElideNone)  # shortened by us, to a whole word
        self.prompt_tabs.setStyleSheet("QTabBar::tab { padding: 5px 12px; font-weight: normal; }"
                                       "QTabBar::tab:selected { font-weight: normal; }")
        self.prompt_tabs.setUsesScrollButtons(True)
        self.prompt_tabs.currentChanged.connect(self._on_prompt_changed)
        self.prompt_tabs.hide()
        self.prompt_label = QLabel(self)
        self.prompt_label.setObjectName("muted")
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.grid = CompareGrid(self)
        self.grid.clicked.connect(self.select_cell)
        self.empty_label = QLabel(self)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setObjectName("muted")
        self.empty_label.setWordWrap(True)
        grid_holder = QWidget(self)
        holder_layout = QVBoxLayout(grid_holder)
        holder_layout.setContentsMargins(0, 0, 0, 0)
        holder_layout.addWidget(self.grid)
        holder_layout.addWidget(self.empty_label, 1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(grid_holder)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        left = QWidget(self)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.prompt_tabs)
        left_layout.addWidget(self.prompt_label)
        left_layout.addWidget(scroll, 1)

        self.preview_label = QLabel("Click an image to see it larger.", self)
        self.preview_label.setObjectName("preview")
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setMinimumSize(300, 300)
        # Ignored: a label's size hint is its pixmap's, which would stop the splitter from ever shrinking it.
        self.preview_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self._preview_pixmap = QPixmap()
        self.caption_label = QLabel(self)
        self.caption_label.setWordWrap(True)
        self.caption_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.export_button = QPushButton("Export…", self, clicked=self.open_export_dialog)
        self.export_button.setEnabled(False)
        self.export_button.setToolTip("Pick an image of a checkpoint first")
        right = QWidget(self)
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.preview_label, 1)
        right_layout.addWidget(self.caption_label)
        right_layout.addWidget(self.export_button, 0, Qt.AlignmentFlag.AlignRight)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
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
        layout.addLayout(top)
        layout.addWidget(self.error_frame)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(bottom)

    # --- public API ---------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._process.is_running()

    def selected_step(self) -> int | None:
        """The checkpoint of the picked image; None for none picked or the base model."""
        return self._selected[1] if self._selected is not None and self._selected[1] > 0 else None

    def selected_cell(self) -> ev.CompareCell | None:
        return self._cells.get(self._selected) if self._selected is not None else None

    def image_count(self) -> int:
        return len(self._cells)

    def prompt_count(self) -> int:
        return self.prompt_tabs.count()

    def compare_args(self) -> list[str] | None:
        """The engine's command line for the current choices, or None while they are not valid."""
        plan = self._plan_from_controls()
        if plan is None:
            return None
        args = ["compare", str(self.run_dir), "--steps", ",".join(str(s) for s in plan.steps),
                "--strengths", ",".join(format_strength(s) for s in plan.strengths),
                "--sampling-steps", str(self.sampling_steps.value())]
        if plan.prompts != self._settings.prompts:  # otherwise the engine uses the run's own
            for prompt in plan.prompts:
                args += ["--prompt", prompt]
        if not self._trigger_variants():
            args.append("--no-trigger-variants")
        return args

    def generate(self) -> None:
        """Generate, or (while running) Stop; a second Stop ends the engine without waiting."""
        if self._process.is_running():
            self.stop()
            return
        args, plan = self.compare_args(), self._plan_from_controls()
        if args is None or plan is None:
            return
        self._plan = plan
        self._cells.clear()
        self._images.clear()
        self._requested.clear()
        self._made, self._phase = 0, ""
        self._folder = self._saved = None
        self._error = self._finished = None
        self._select(None)
        self.error_frame.hide()
        self._rebuild()
        self.grid.set_waiting(True)
        self._set_status("Starting the engine: loading the base model takes a little while…")
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        self._process.start(args)
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

    # --- engine events ------------------------------------------------------------------------------

    def _on_cell(self, cell: ev.CompareCell) -> None:
        path = Path(cell.path)
        if not path.is_absolute():
            cell = ev.CompareCell(step=cell.step, strength=cell.strength, trigger=cell.trigger,
                                  prompt_index=cell.prompt_index, prompt=cell.prompt, seed=cell.seed,
                                  path=str(self.run_dir / path), time=cell.time)
        key = cell_key(cell)
        if key not in self._cells:
            self._made += 1
        self._cells[key] = cell
        self._images.pop(cell.path, None)  # the same file name may have been made again
        self._requested.discard(cell.path)
        self._folder = Path(cell.path).parent
        self.open_button.setEnabled(True)
        if not self._rebuild_if_needed() and key[0] == self._current_prompt():
            self.grid.set_cell(cell)
            self._request_thumb(cell.path)
            self._update_prompt_label()
        if key == self._selected:
            self._select(key)
        self._show_progress()

    def _on_status(self, event: ev.Status) -> None:
        self._phase = event.message or event.phase.capitalize()
        self._show_progress()

    def _on_error(self, event: ev.Error) -> None:
        self._error = event
        self.error_label.setText(f"<b>✖ {_html(event.message)}</b>")
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
        total = self._plan.total() if self._plan else 0
        made = f"{self._made} of {total} images" if total >= self._made else f"{self._made} images"
        if status == "completed":
            self._set_status(f"Done: {_images(self._made)}. Click one to see it larger, then export the "
                             "checkpoint you like.")
        elif status == "stopped":
            self._set_status(f"Stopped after {made}. The images made are kept.")
        else:
            self._set_status(f"The comparison did not finish ({made} made)." if self._made
                             else "The comparison did not finish.")
        self._update_controls()
        if self._close_when_done and self.isVisible():
            super().reject()

    # --- view ---------------------------------------------------------------------------------------

    def _show_saved(self, saved: SavedGrid) -> None:
        for cell in saved.cells:
            self._cells[cell_key(cell)] = cell
        self._folder = saved.folder
        self.open_button.setEnabled(True)
        strengths = sorted({round(c.strength, 4) for c in saved.cells if not is_base(c)})
        if strengths and all(0 < s <= MAX_STRENGTH for s in strengths):
            self.strengths_edit.setText(", ".join(format_strength(s) for s in strengths))
        self._rebuild()
        when = dt.datetime.fromtimestamp(saved.saved_at).strftime("%d %b %Y, %H:%M").lstrip("0")
        unfinished = " (it was stopped before the end)" if saved.status in ("stopped", "failed", "running") else ""
        self._set_status(f"The comparison of {when}: {_images(len(saved.cells))}{unfinished}. "
                         "Generate makes a new one.")

    def _rows_and_columns(self, prompt: int) -> tuple[list[int], list[Column]]:
        """Rows: every checkpoint asked for or shown. Columns: this prompt's trigger states (a prompt without
        the trigger word as a tag has no without-variant) times every strength."""
        plan = self._plan
        rows = set(plan.steps) if plan else set()
        strengths = set(plan.strengths) if plan else set()
        triggers = set(plan.prompt_triggers(prompt)) if plan else set()
        for p, step, trigger, strength in self._cells:
            if step:
                rows.add(step)
                strengths.add(strength)
            if p == prompt:
                triggers.add(trigger)
        if not rows and not self._cells:
            return [], []
        triggers = triggers or {True}
        columns: list[Column] = [(t, s) for t in sorted(triggers, reverse=True) for s in sorted(strengths)]
        # a group with only base-model images still needs a column to sit in
        columns += [(t, None) for t in sorted(triggers, reverse=True) if not strengths]
        return [0, *sorted(rows)], columns

    def _prompt_titles(self) -> list[str]:
        planned = self._plan.prompts if self._plan else ()
        count = max([len(planned), *(k[0] + 1 for k in self._cells)])
        titles = []
        for i in range(count):
            cells = sorted((c for k, c in self._cells.items() if k[0] == i), key=lambda c: not c.trigger)
            if cells and cells[0].prompt:
                titles.append(cells[0].prompt)
            elif i < len(planned):
                titles.append(planned[i])
            else:
                titles.append(f"Prompt {i + 1}")
        return titles

    def _current_prompt(self) -> int:
        return max(0, self.prompt_tabs.currentIndex())

    def _rebuild_if_needed(self) -> bool:
        if self._structure_now() == self._structure:
            return False
        self._rebuild()
        return True

    def _structure_now(self) -> tuple:
        prompt = self._current_prompt()
        return (*self._rows_and_columns(prompt), tuple(self._prompt_titles()), prompt)

    def _rebuild(self) -> None:
        titles = self._prompt_titles()
        self.prompt_tabs.blockSignals(True)
        current = self._current_prompt()
        while self.prompt_tabs.count() > len(titles):
            self.prompt_tabs.removeTab(self.prompt_tabs.count() - 1)
        for i, title in enumerate(titles):
            short = title if len(title) <= 40 else title[:38].rsplit(" ", 1)[0].rstrip(" ,") + "…"
            if i >= self.prompt_tabs.count():
                self.prompt_tabs.addTab(short)
            else:
                self.prompt_tabs.setTabText(i, short)
            self.prompt_tabs.setTabToolTip(i, title)
        if titles:
            self.prompt_tabs.setCurrentIndex(min(current, len(titles) - 1))
        self.prompt_tabs.blockSignals(False)
        self.prompt_tabs.setVisible(len(titles) > 1)

        prompt = self._current_prompt()
        rows, columns = self._rows_and_columns(prompt)
        self._structure = self._structure_now()
        if not rows:
            self.grid.hide()
            self.prompt_label.hide()
            self.empty_label.setText(
                "The grid shows each checkpoint at the strengths you choose, next to the base model, with the same "
                "seed, so the differences are the LoRA's.\n\nChoose checkpoints and strengths above, then Generate."
                if self._steps else "This run has no checkpoint yet.")
            self.empty_label.show()
            return
        self.empty_label.hide()
        self.grid.show()
        self.grid.set_structure(prompt, rows, columns, self._settings.trigger, self._process.is_running())
        self._fit_timer.start()  # new cells in a shown widget are laid out (and sized) on the next turn
        self.grid.select(self._selected)
        self._update_prompt_label(titles)
        for key, cell in self._cells.items():
            if key[0] != prompt:
                continue
            widget = self.grid.set_cell(cell)
            if widget is not None and cell.path in self._images:
                widget.set_image(self._images[cell.path])
            else:
                self._request_thumb(cell.path)

    def _update_prompt_label(self, titles: list[str] | None = None) -> None:
        titles = self._prompt_titles() if titles is None else titles
        prompt = self._current_prompt()
        if prompt >= len(titles):
            self.prompt_label.hide()
            return
        seeds = {c.seed for k, c in self._cells.items() if k[0] == prompt}
        seed = f" · seed {seeds.pop()}" if len(seeds) == 1 else ""
        self.prompt_label.setText(f"Prompt: “{_html(titles[prompt])}”{seed}")
        self.prompt_label.show()

    def _on_prompt_changed(self, index: int) -> None:
        if index < 0:
            return
        if self._selected is not None:
            _p, step, trigger, strength = self._selected
            self._selected = (index, step, trigger, strength)  # the same place in the other prompt's grid
        self._rebuild()
        self._select(self._selected)

    def _select(self, key: CellKey | None) -> None:
        self._selected = key
        self.grid.select(key)
        self._update_export_button()
        cell = self._cells.get(key) if key is not None else None
        self._preview_pixmap = QPixmap()
        self.preview_label.setPixmap(QPixmap())
        if cell is None:
            self.preview_label.setText("Click an image to see it larger." if key is None else "Not made.")
            self.caption_label.clear()
            return
        self.preview_label.setText("Loading…")
        what = ("<b>Base model</b> (no LoRA)" if is_base(cell) else
                f"<b>Step {cell.step:,}</b> · strength {format_strength(cell.strength)}")
        trigger = group_title(cell.trigger, self._settings.trigger).lower() if self._settings.trigger else ""
        self.caption_label.setText(f"{what}{' · ' + _html(trigger) if trigger else ''} · seed {cell.seed}"
                                   f"<br>{_html(cell.prompt)}")
        self._loader.request(cell.path, self._pixels(PREVIEW_SIZE))

    def _show_progress(self) -> None:
        if not self._process.is_running() or self._process.is_stopping():
            return
        total = self._plan.total() if self._plan else 0
        if self._made == 0:
            self._set_status(f"{self._phase}…" if self._phase and not self._phase.endswith("…") else self._phase)
            return
        # Once images arrive the count says it all (the engine's own "cell n of N" would only repeat it).
        if total >= self._made:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(self._made)
            self._set_status(f"{self._made} of {total} images")
        else:
            self.progress_bar.setRange(0, 0)
            self._set_status(_images(self._made))

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _plan_from_controls(self) -> Plan | None:
        steps = tuple(self.checkpoint_list.item(i).data(Qt.ItemDataRole.UserRole)
                      for i in range(self.checkpoint_list.count())
                      if self.checkpoint_list.item(i).checkState() == Qt.CheckState.Checked)
        try:
            strengths = tuple(parse_strengths(self.strengths_edit.text()))
        except ValueError:
            return None
        prompts = self._prompts()
        if not steps or not prompts:
            return None
        both, word = self._trigger_variants(), self._settings.trigger
        triggers = tuple((True, False) if both and has_trigger_variant(p, word) else (True,) for p in prompts)
        return Plan(steps, strengths, prompts, triggers)

    def _prompts(self) -> tuple[str, ...]:
        return tuple(line.strip() for line in self.prompts_edit.toPlainText().splitlines() if line.strip())

    def _trigger_variants(self) -> bool:
        return bool(self._settings.trigger) and self.trigger_check.isChecked()

    def _validate(self, *_args) -> None:
        try:
            parse_strengths(self.strengths_edit.text())
            self.strengths_problem.hide()
        except ValueError as e:
            self.strengths_problem.setText(str(e))
            self.strengths_problem.show()
        plan = self._plan_from_controls()
        if plan is not None:
            n = len(plan.prompts)
            self.summary_label.setText(f"{_images(plan.total())} · {n} prompt{'s' if n != 1 else ''}")
        elif self._steps and not any(self.checkpoint_list.item(i).checkState() == Qt.CheckState.Checked
                                     for i in range(self.checkpoint_list.count())):
            self.summary_label.setText("Pick at least one checkpoint.")
        elif not self._prompts():
            self.summary_label.setText("Write at least one prompt.")
        else:
            self.summary_label.setText("")
        self._update_controls()

    def _update_controls(self) -> None:
        running = self._process.is_running()
        stopping = running and self._process.is_stopping()
        self.generate_button.setText("Force stop" if stopping else "Stop" if running else "Generate")
        self.generate_button.setToolTip(
            "End the engine now" if stopping else "Stop after the image being made; the images made are kept"
            if running else "Make the images (the engine loads the base model and each checkpoint)")
        self.generate_button.setEnabled(running or self._plan_from_controls() is not None)
        for w in (self.checkpoint_list, self.strengths_edit, self.sampling_steps, self.prompts_edit):
            w.setEnabled(not running)
        self.trigger_check.setEnabled(not running and bool(self._settings.trigger))
        self._update_export_button()

    def _update_export_button(self) -> None:
        step = self.selected_step()
        running = self._process.is_running()
        self.export_button.setText(f"Export step {step:,}…" if step else "Export…")
        self.export_button.setEnabled(step is not None and not running)
        self.export_button.setToolTip(
            "Wait for the comparison to finish" if running and step else
            f"Export the LoRA of step {step:,} as a file your UI loads" if step else
            "The base model has no LoRA to export: pick an image of a checkpoint" if self._selected else
            "Pick an image of a checkpoint first")

    # --- images -------------------------------------------------------------------------------------

    def _pixels(self, logical: int) -> int:
        return round(logical * self.devicePixelRatioF())

    def _request_thumb(self, path: str) -> None:
        if path in self._images or path in self._requested:
            return
        self._requested.add(path)
        self._loader.request(path, self._pixels(THUMB_SIZE))

    def _on_image(self, path: str, max_side: int, image: QImage) -> None:
        if max_side == self._pixels(THUMB_SIZE):
            if path not in self._requested:
                return  # from before a new comparison started
            self._images[path] = image
            self.grid.set_image(path, image)
        cell = self.selected_cell()
        if max_side == self._pixels(PREVIEW_SIZE) and cell is not None and cell.path == path:
            if image.isNull():
                self.preview_label.setText(f"The image file is gone:\n{path}")
                return
            self._preview_pixmap = QPixmap.fromImage(image)
            self._fit_preview()

    def _fit_preview(self) -> None:
        if self._preview_pixmap.isNull():
            return
        dpr = self.devicePixelRatioF()
        pixmap = self._preview_pixmap.scaled(self.preview_label.size() * dpr, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation)
        pixmap.setDevicePixelRatio(dpr)
        self.preview_label.setPixmap(pixmap)

    def _fit_splitter(self) -> None:
        """Give the grid the width it needs (when the window has it); the large view takes the rest."""
        total = self.splitter.width() if self.splitter.isVisible() else self.width() - 24
        want = self.grid.sizeHint().width() + 24  # and a vertical scroll bar
        left = max(280, min(want, total - 340))
        self.splitter.setSizes([left, max(0, total - left)])

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.grid.isVisible():
            self._fit_splitter()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_preview()

    def wait_for_images(self, msecs: int = 5000) -> bool:
        return self._loader.wait(msecs)

    def _open_folder(self) -> None:
        if self._folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._folder)))


def _images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")


def _html(text: str) -> str:
    return html.escape(text, quote=False)
