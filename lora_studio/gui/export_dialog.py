"""Export a run's checkpoint as a LoRA file, by default straight into the artist's UI's LoRA folder.

The export runs in the engine process (`lora_studio export RUN_DIR --step N --out FILE --events`), which
loads the base model to verify the file; the dialog shows that verdict and the preview image it made.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QPixmap
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
    QPushButton, QVBoxLayout, QWidget,
)

from lora_studio.core import events as ev
from lora_studio.core.images import ImageError
from lora_studio.core.ranking import read_ranking
from lora_studio.core.runs import RunDir
from lora_studio.gui.engine_process import EngineBusy, EngineProcess
from lora_studio.gui.images import decode_image

PREVIEW_SIZE = 256


def detected_lora_dirs() -> list[Path]:
    """The LoRA folders of the artist's UIs (A1111/Forge, ComfyUI, ...), or none when detection is unavailable."""
    try:
        from lora_studio.core.model_finder import find_lora_dirs
    except ImportError:
        return []
    try:
        return [Path(p) for p in find_lora_dirs()]
    except OSError:
        return []


def lora_name(run_dir: Path) -> str:
    """The run's output name ([output] name of its settings), read leniently: the dialog must open anyway."""
    try:
        with open(RunDir(run_dir).config, "rb") as f:
            name = tomllib.load(f).get("output", {}).get("name", "")
    except (OSError, tomllib.TOMLDecodeError):
        name = ""
    return name if isinstance(name, str) and name.strip() else run_dir.name


class ExportDialog(QDialog):
    exported = Signal(object)  # ev.Exported (or a stand-in built from the exit when the engine sent none)

    def __init__(
        self,
        run_dir: Path,
        parent: QWidget | None = None,
        lora_dirs: list[Path] | None = None,
        *,
        program: str | None = None,
        prefix_args: list[str] | None = None,
        step: int | None = None,
    ):
        """step preselects that checkpoint (the comparison grid's pick); None or an unknown step: the one the run's
        ranking recommends, else the newest."""
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.setWindowTitle(f"Export LoRA — {self.run_dir.name}")
        self.result: ev.Exported | None = None
        self._name = lora_name(self.run_dir)
        self._name_edited = False
        self._with_events_flag = True
        self._error: ev.Error | None = None
        self._process = EngineProcess(self, program=program, prefix_args=prefix_args, require_finished=False)
        self._process.event.connect(self._on_event)
        self._process.done.connect(self._on_done)

        self.checkpoint_combo = QComboBox(self)
        steps = RunDir(self.run_dir).checkpoint_steps()
        rec = read_ranking(RunDir(self.run_dir).ranking)
        rec = rec if rec is not None and rec.step in steps else None  # a recommended step since deleted: no mark
        self.recommended_step = rec.step if rec else None
        for s in reversed(steps):
            notes = ", ".join(n for n, on in (("recommended", s == self.recommended_step), ("newest", s == steps[-1])) if on)
            star = "★ " if s == self.recommended_step else ""
            self.checkpoint_combo.addItem(f"{star}Step {s:,}" + (f" ({notes})" if notes else ""), s)
        for wanted in (step, self.recommended_step):
            if wanted is not None and (index := self.checkpoint_combo.findData(wanted)) >= 0:
                self.checkpoint_combo.setCurrentIndex(index)
                break
        self.recommendation_label = QLabel(f"★ Recommended — {rec.sentence}" if rec else "", self)
        self.recommendation_label.setObjectName("muted")
        self.recommendation_label.setWordWrap(True)
        self.recommendation_label.setVisible(rec is not None)
        self.checkpoint_combo.currentIndexChanged.connect(self._update_default_name)

        self.folder_combo = QComboBox(self)
        dirs = list(lora_dirs) if lora_dirs is not None else detected_lora_dirs()
        for folder in dict.fromkeys([*map(Path, dirs), self.run_dir]):  # keep order, drop duplicates
            label = "This run's folder" if folder == self.run_dir else str(folder)
            self.folder_combo.addItem(label, folder)
            self.folder_combo.setItemData(self.folder_combo.count() - 1, str(folder), Qt.ItemDataRole.ToolTipRole)
        browse = QPushButton("Browse…", self, clicked=self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder_combo, 1)
        folder_row.addWidget(browse)

        self.name_edit = QLineEdit(self)
        self.name_edit.textEdited.connect(self._on_name_edited)
        self.name_edit.textChanged.connect(self._check_target)
        self.folder_combo.currentIndexChanged.connect(self._check_target)
        self.exists_label = QLabel("A file with this name is already there; exporting replaces it.", self)
        self.exists_label.setObjectName("muted")  # the app style sheet makes it readable on dark and light
        self.exists_label.hide()

        # A grid, not a QFormLayout: a form gives a word-wrapped label the height of one line, which cut the
        # recommendation's sentence in half; a grid asks the label its height for the width it gets.
        form = QGridLayout()
        form.setColumnStretch(1, 1)
        for row, (label, field) in enumerate((("Checkpoint:", self.checkpoint_combo), ("", self.recommendation_label),
                                              ("Save in:", folder_row), ("File name:", self.name_edit),
                                              ("", self.exists_label))):
            if label:
                form.addWidget(QLabel(label, self), row, 0)
            if isinstance(field, QWidget):
                form.addWidget(field, row, 1)
            else:
                form.addLayout(field, row, 1)

        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)  # the engine does not report export progress: just show it is working
        self.busy.hide()
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.result_label = QLabel(self)
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.preview_label = QLabel(self)
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.hide()

        self.buttons = QDialogButtonBox(self)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setDefault(True)
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_button.hide()
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.export_button.clicked.connect(self.start_export)
        self.open_button.clicked.connect(self._open_folder)
        self.close_button.clicked.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.busy)
        layout.addWidget(self.status_label)
        layout.addWidget(self.result_label)
        layout.addWidget(self.preview_label, 1)
        layout.addWidget(self.buttons)

        self._update_default_name()
        if not steps:
            self.export_button.setEnabled(False)
            self.status_label.setText("This run has no checkpoint yet: train until one is saved, then export.")
        self.setMinimumWidth(520)

    # --- public API ---------------------------------------------------------------------------------

    def selected_step(self) -> int | None:
        return self.checkpoint_combo.currentData()

    def output_path(self) -> Path:
        name = self.name_edit.text().strip() or self._default_file_name()
        if not name.endswith(".safetensors"):
            name += ".safetensors"
        return Path(self.folder_combo.currentData()) / name

    def is_running(self) -> bool:
        return self._process.is_running()

    def start_export(self) -> None:
        step = self.selected_step()
        if step is None or self._process.is_running():
            return
        self.result, self._error = None, None
        self.result_label.clear()
        self.preview_label.hide()
        self.open_button.hide()
        args = ["export", str(self.run_dir), "--step", str(step), "--out", str(self.output_path())]
        try:
            self._process.start(args + (["--events"] if self._with_events_flag else []))
        except EngineBusy as e:  # training or a comparison of this project is at work
            self.result_label.setText(f"<b>{_html(e.message)}</b><br>{_html(e.hint)}")
            return
        self._set_busy(True, f"Exporting step {step:,} and checking it against the base model…")

    def reject(self) -> None:
        self._process.kill()  # a half-written export is worth nothing; the engine writes it atomically
        super().reject()

    # --- process results ----------------------------------------------------------------------------

    def _on_event(self, event: ev.Event) -> None:
        match event:
            case ev.Exported():
                self.result = event
            case ev.Error():
                self._error = event
            case ev.Status():
                self.status_label.setText(event.message or event.phase.capitalize())

    def _on_done(self, success: bool) -> None:
        tail = "\n".join(self._process.stderr_tail())
        if not success and self._with_events_flag and "unrecognized arguments" in tail and "--events" in tail:
            # An engine from before `export --events`: run it again the old way and judge by its exit code.
            self._with_events_flag = False
            self.start_export()
            return
        self._set_busy(False, "")
        self._check_target()
        if success:
            had_event = self.result is not None
            result = self.result or ev.Exported(path=str(self.output_path()), step=self.selected_step() or 0)
            self.result = result
            self._show_result(result, verified_known=had_event)
            self.exported.emit(result)
        else:
            error = self._error or ev.Error(code="export_failed", message="The export failed.")
            text = f"<b>{_html(error.message)}</b>"
            if error.hint:
                text += f"<br>{_html(error.hint).replace(chr(10), '<br>')}"
            self.result_label.setText(text)
        # Grow to fit the result, the preview or the error: a dialog that keeps its size squeezes the rows
        # above, and the word-wrapped recommendation loses its second line first.
        self.adjustSize()

    def _show_result(self, result: ev.Exported, verified_known: bool) -> None:
        name = _html(Path(result.path).name)
        if verified_known and result.verified:
            text = f"✓ <b>Saved {name}</b><br>Verified: it loads, and every weight fits the base model."
        elif result.problems:
            items = "".join(f"<li>{_html(p)}</li>" for p in result.problems)
            text = f"⚠ <b>Saved {name}, but the check found problems:</b><ul>{items}</ul>"
        else:
            text = f"<b>Saved {name}</b><br>(This engine did not report a verification.)"
        self.result_label.setText(text)
        self.open_button.show()
        preview = Path(result.preview) if result.preview else Path(result.path).with_suffix(".preview.png")
        pixmap = _load_preview(preview)
        if pixmap is not None:
            self.preview_label.setPixmap(pixmap)
            self.preview_label.setToolTip(str(preview))
            self.preview_label.show()

    # --- helpers ------------------------------------------------------------------------------------

    def _set_busy(self, busy: bool, message: str) -> None:
        self.busy.setVisible(busy)
        self.status_label.setText(message)
        for w in (self.export_button, self.checkpoint_combo, self.folder_combo, self.name_edit):
            w.setEnabled(not busy)

    def _default_file_name(self) -> str:
        step = self.selected_step()
        return f"{self._name}-step{step:06d}.safetensors" if step is not None else f"{self._name}.safetensors"

    def _update_default_name(self) -> None:
        if not self._name_edited:
            self.name_edit.setText(self._default_file_name())

    def _on_name_edited(self, _text: str) -> None:
        self._name_edited = True

    def _check_target(self) -> None:
        self.exists_label.setVisible(self.output_path().exists())

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export LoRA as", str(self.output_path()), "LoRA (*.safetensors)")
        if not path:
            return
        folder = Path(path).parent
        index = self.folder_combo.findData(folder)
        if index < 0:
            self.folder_combo.addItem(str(folder), folder)
            index = self.folder_combo.count() - 1
        self.folder_combo.setCurrentIndex(index)
        self._name_edited = True
        self.name_edit.setText(Path(path).name)

    def _open_folder(self) -> None:
        target = Path(self.result.path).parent if self.result else self.output_path().parent
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(target)))


def _load_preview(path: Path) -> QPixmap | None:
    # One small PNG: decoding it scaled on the GUI thread takes a few milliseconds.
    try:
        return QPixmap.fromImage(decode_image(path, PREVIEW_SIZE))
    except ImageError:  # damaged, or gone since the export: the dialog shows no preview
        return None


def _html(text: str) -> str:
    return html.escape(text, quote=False)
