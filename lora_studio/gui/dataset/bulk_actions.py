"""Edits over the whole dataset: the trigger word in every caption, find/replace, exclude/include images.

Each is one command on the window's undo stack: undo puts back every caption file byte for byte, or
the previous `dataset.exclude`. Excluding an image only lists it in the project settings; the file
itself is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack
from PySide6.QtWidgets import QCheckBox, QGridLayout, QLabel, QLineEdit, QPushButton, QWidget

from lora_studio.core.captions import add_trigger, find_replace, remove_trigger
from lora_studio.core.dataset import normalize_rel
from lora_studio.gui.dataset.rows import unusable_reason
from lora_studio.gui.dataset.caption_editor import CaptionChange, CaptionWriter, SetCaptionsCommand, read_bytes
from lora_studio.gui.store import ConfigStore


class SetExcludedCommand(QUndoCommand):
    def __init__(self, store: ConfigStore, rels: list[str], exclude: bool, text: str):
        super().__init__(text)
        self.store, self.rels, self.exclude = store, rels, exclude
        self.before: list[str] = []

    def redo(self) -> None:
        self.before = list(self.store.get("dataset.exclude"))
        if self.exclude:
            after = self.before + [r for r in self.rels if r not in self.before]
        else:
            after = [r for r in self.before if r not in self.rels]
        self.store.set("dataset.exclude", after)

    def undo(self) -> None:
        self.store.set("dataset.exclude", self.before)


class BulkActions(QObject):
    """The actions; `items` gives the dataset's rows (ImageItem-like) at the moment an action runs."""

    message = Signal(str)  # what happened, in plain words, for the status line

    def __init__(self, undo_stack: QUndoStack, writer: CaptionWriter, store: ConfigStore,
                 items: Callable[[], list[Any]], parent: QObject | None = None):
        super().__init__(parent)
        self.undo_stack, self.writer, self.store, self._items = undo_stack, writer, store, items

    def _rewrite(self, edit: Callable[[str], str], label: str, *, create_missing: bool = False) -> int:
        changes = []
        for it in self._items():
            if unusable_reason(it) or (not it.has_caption and not create_missing):
                continue  # a file that cannot train gets no caption written beside it
            new = edit(it.caption)
            if it.has_caption and new == it.caption:
                continue
            changes.append(CaptionChange(Path(it.path), Path(it.caption_path), read_bytes(it.caption_path), new))
        if changes:
            self.undo_stack.push(SetCaptionsCommand(self.writer, changes, label))
        return len(changes)

    def add_trigger(self, trigger: str) -> int:
        trigger = trigger.strip()
        if not trigger:
            self.message.emit("Type a trigger word first.")
            return 0
        # Images without a caption file get one, so the trigger trains with every image.
        n = self._rewrite(lambda c: add_trigger(c, trigger), f'Add "{trigger}" to captions', create_missing=True)
        self.message.emit(f'Added "{trigger}" to the start of {_captions(n)}.' if n else f'Every caption already starts with "{trigger}".')
        return n

    def remove_trigger(self, trigger: str) -> int:
        trigger = trigger.strip()
        if not trigger:
            self.message.emit("Type the trigger word to remove first.")
            return 0
        n = self._rewrite(lambda c: remove_trigger(c, trigger), f'Remove "{trigger}" from captions')
        self.message.emit(f'Removed "{trigger}" from {_captions(n)}.' if n else f'No caption has the tag "{trigger}".')
        return n

    def find_replace(self, find: str, replace: str, *, whole_tag: bool = False) -> int:
        if not find:
            self.message.emit("Type the text to find first.")
            return 0
        n = self._rewrite(lambda c: find_replace(c, find, replace, whole_tag=whole_tag), f'Replace "{find}" with "{replace}"')
        self.message.emit(f'Replaced "{find}" with "{replace}" in {_captions(n)}.' if n else f'No caption contains "{find}".')
        return n

    def set_excluded(self, rels: Iterable[str], exclude: bool) -> int:
        rels = [normalize_rel(r) for r in rels]
        current = set(self.store.get("dataset.exclude"))
        todo = [r for r in rels if (r not in current) == exclude]
        if not todo:
            return 0
        n = len(todo)
        what = todo[0] if n == 1 else f"{n} images"
        if exclude:
            text, msg = f"Exclude {what}", f"Left {what} out of training. The file is untouched; Include brings it back."
        else:
            # A file name is said as it is spelled ("geopop_07.png", never "Geopop_07.png").
            text, msg = f"Include {what}", f"Included {what} in training again."
        self.undo_stack.push(SetExcludedCommand(self.store, todo, exclude, text))
        self.message.emit(msg)
        return n


def _captions(n: int) -> str:
    return f"{n} caption" + ("" if n == 1 else "s")


class BulkActionsBar(QWidget):
    """One row under the grid: trigger word add/remove, and find/replace over every caption."""

    def __init__(self, actions: BulkActions, parent: QWidget | None = None):
        super().__init__(parent)
        self.actions = actions
        self.trigger = QLineEdit()
        self.trigger.setPlaceholderText("trigger word")
        self.trigger.setToolTip("A rare word that calls up your style, e.g. \"zzmystyle\". Same as the trigger word in Settings.")
        self.trigger.setMinimumWidth(140)
        self.add_button = QPushButton("Add to all")
        self.add_button.setToolTip("Put the trigger word first in every caption")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Take the trigger word out of every caption")
        self.find = QLineEdit(placeholderText="find")
        self.replace = QLineEdit(placeholderText="replace with")
        for w in (self.find, self.replace):
            w.setMinimumWidth(80)
        self.whole_tag = QCheckBox("Whole tags")
        self.whole_tag.setToolTip("Only replace tags that are exactly this text")
        self.replace_button = QPushButton("Replace all")

        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setVerticalSpacing(4)
        layout.addWidget(QLabel("Trigger:"), 0, 0)
        layout.addWidget(self.trigger, 0, 1)
        layout.addWidget(self.add_button, 0, 2)
        layout.addWidget(self.remove_button, 0, 3)
        layout.addWidget(QLabel("Find:"), 1, 0)
        layout.addWidget(self.find, 1, 1)
        layout.addWidget(self.replace, 1, 2, 1, 2)
        layout.addWidget(self.whole_tag, 1, 4)
        layout.addWidget(self.replace_button, 1, 5)
        layout.setColumnStretch(6, 1)
        self.add_button.clicked.connect(lambda: actions.add_trigger(self.trigger.text()))
        self.remove_button.clicked.connect(lambda: actions.remove_trigger(self.trigger.text()))
        self.replace_button.clicked.connect(
            lambda: actions.find_replace(self.find.text(), self.replace.text(), whole_tag=self.whole_tag.isChecked()))
        self.find.returnPressed.connect(self.replace_button.click)
        self.replace.returnPressed.connect(self.replace_button.click)
        # The trigger word is a project setting (output.trigger): the bar and Settings show the same one.
        store = actions.store
        self.trigger.textEdited.connect(lambda t: store.set("output.trigger", t.strip()))
        store.changed.connect(self._pull_trigger)
        self._pull_trigger("")

    def _pull_trigger(self, key: str) -> None:
        if key in ("", "output.trigger") and self.trigger.text().strip() != self.actions.store.get("output.trigger"):
            self.trigger.setText(self.actions.store.get("output.trigger"))
