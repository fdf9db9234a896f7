"""The project's settings as an observable store, and `bind(store, "train.rank", widget)` to edit them.

One store per open project. Every edit goes through `store.set(key, value)`: it re-validates, emits
`changed(key)`, and saves the project file after a short pause (atomically), so the artist never has
a Save button to forget. Widgets follow the store, never each other (krita-ai-diffusion's bind idea).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QSignalBlocker, QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QPlainTextEdit, QSpinBox, QWidget

from lora_studio.core import config as config_mod
from lora_studio.core import model_files, optimizers
from lora_studio.core.config import Config
from lora_studio.core.errors import Problem
from lora_studio.core.project import Project

# Set for each run by Project.new_run, so an empty value in the project file is not a problem.
RUN_ONLY_KEYS = {"output.dir"}
SAVE_DELAY_MS = 400


class ConfigStore(QObject):
    changed = Signal(str)  # a "section.key", or "" when the whole config was replaced
    problems_changed = Signal()
    saved = Signal()
    save_failed = Signal(str)

    def __init__(self, parent: QObject | None = None, save_delay_ms: int = SAVE_DELAY_MS):
        super().__init__(parent)
        self.project: Project | None = None
        self.config = Config()
        self.problems: list[Problem] = []
        self._timer = QTimer(self, singleShot=True, interval=save_delay_ms)
        self._timer.timeout.connect(self.flush)
        self._dirty = False

    def load(self, project: Project | None, cfg: Config | None = None) -> None:
        self.flush()
        self.project = project
        self.config = cfg if cfg is not None else (project.load_config() if project else Config())
        self._dirty = False
        self._revalidate()
        self.changed.emit("")

    def get(self, key: str) -> Any:
        return self.config.get(key)

    def set(self, key: str, value: Any) -> None:
        if self.get(key) == value:
            return
        changes = {key: value}
        if key == "train.optimizer" and value in optimizers.OPTIMIZERS:
            # The arguments were written for the optimizer before: keep those the new one takes. Otherwise one
            # switch in the app would block Start on an argument that only the project file can remove.
            takes = optimizers.OPTIMIZERS[value].args
            changes["train.optimizer_args"] = {k: v for k, v in self.get("train.optimizer_args").items() if k in takes}
        self.config = self.config.with_changes(changes)
        self._edited()
        self.changed.emit(key)

    def replace(self, cfg: Config) -> None:
        """A whole new config (a preset, a fix): every bound widget refreshes."""
        self.config = cfg
        self._edited()
        self.changed.emit("")

    def problems_for(self, key: str) -> list[Problem]:
        return [p for p in self.problems if p.key == key or p.key.startswith(key + "[")]

    def flush(self) -> None:
        """Save now if an edit is waiting (before a run starts, on close, on switching projects)."""
        self._timer.stop()
        if not self._dirty or self.project is None:
            return
        try:
            self.project.save_config(self.config)
        except OSError as e:
            self.save_failed.emit(f"The settings could not be saved to {self.project.config_path}: {e.strerror or e}.")
            return
        self._dirty = False
        self.saved.emit()

    def _edited(self) -> None:
        self._dirty = True
        self._revalidate()
        self._timer.start()

    def _revalidate(self) -> None:
        problems = [p for p in config_mod.validate(self.config) if p.key not in RUN_ONLY_KEYS]
        problems += model_files.model_problems(self.config)  # a damaged model is said when it is picked
        if problems != self.problems:
            self.problems = problems
            self.problems_changed.emit()


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def bind(store: ConfigStore, key: str, widget: QWidget, *, to_widget: Callable[[Any], Any] | None = None,
         from_widget: Callable[[Any], Any] | None = None) -> QWidget:
    """Keep widget and store.config[key] in step, both ways. Returns the widget (for use inline in forms)."""
    to_w = to_widget or (lambda v: v)
    from_w = from_widget or (lambda v: v)

    def push(value: Any) -> None:
        store.set(key, from_w(value))

    if isinstance(widget, QCheckBox):
        def pull() -> None:
            widget.setChecked(bool(to_w(store.get(key))))
        widget.toggled.connect(push)
    elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        def pull() -> None:
            widget.setValue(to_w(store.get(key)))
        widget.valueChanged.connect(push)
    elif isinstance(widget, QComboBox):
        def pull() -> None:
            value = to_w(store.get(key))
            i = widget.findData(value)
            if i < 0 and widget.isEditable():
                widget.setEditText(str(value))
            else:
                widget.setCurrentIndex(max(i, 0))
        widget.currentIndexChanged.connect(lambda i: push(widget.itemData(i)) if i >= 0 else None)
    elif isinstance(widget, QLineEdit):
        def pull() -> None:
            text = str(to_w(store.get(key)))
            if widget.text() != text:
                widget.setText(text)
        widget.textEdited.connect(push)
    elif isinstance(widget, QPlainTextEdit):
        as_list = isinstance(store.get(key), list)

        def pull() -> None:
            value = store.get(key)
            current = _lines(widget.toPlainText()) if as_list else widget.toPlainText()
            if current != value:  # never reset the text (and the cursor) under the artist's typing
                widget.setPlainText("\n".join(value) if as_list else str(value))
        widget.textChanged.connect(lambda: push(_lines(widget.toPlainText()) if as_list else widget.toPlainText()))
    else:  # pragma: no cover - a programming error
        raise TypeError(f"bind() does not know {type(widget).__name__}")

    def on_changed(changed_key: str) -> None:
        if not shiboken6.isValid(widget):  # the form was closed; the store lives on
            store.changed.disconnect(on_changed)
            return
        if changed_key in ("", key):
            with QSignalBlocker(widget):
                pull()

    store.changed.connect(on_changed)
    on_changed("")
    return widget
