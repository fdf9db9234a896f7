"""The window's menu bar: File (projects), Edit (undo / redo, forget the drop choice), Help."""

from __future__ import annotations

import shiboken6
from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QKeySequence


def build(window) -> None:
    """Add the menus to a MainWindow; the actions it enables later become its attributes."""
    file = window.menuBar().addMenu("&File")
    window.new_action = file.addAction("&New Project…", window.new_project_dialog, QKeySequence.StandardKey.New)
    window.open_action = file.addAction("&Open Project…", window.open_project_dialog, QKeySequence.StandardKey.Open)
    window.recent_menu = file.addMenu("Recent Projects")
    file.addSeparator()
    window.close_action = file.addAction("&Close Project", window.close_project)
    window.close_action.setEnabled(False)
    file.addSeparator()
    file.addAction("&Quit", window.close, QKeySequence.StandardKey.Quit).setMenuRole(QAction.MenuRole.QuitRole)
    edit = window.menuBar().addMenu("&Edit")
    # Undo first writes any caption still being typed, so undo takes back exactly that edit.
    window.undo_action = edit.addAction("&Undo", window.undo, QKeySequence.StandardKey.Undo)
    window.redo_action = edit.addAction("&Redo", window.redo, QKeySequence.StandardKey.Redo)
    window.undo_action.setEnabled(False)
    window.redo_action.setEnabled(False)
    window.undo_stack.canUndoChanged.connect(window.undo_action.setEnabled)
    window.undo_stack.canRedoChanged.connect(window.redo_action.setEnabled)
    window.undo_stack.undoTextChanged.connect(lambda t: _label(window.undo_action, "&Undo", t))
    window.undo_stack.redoTextChanged.connect(lambda t: _label(window.redo_action, "&Redo", t))
    edit.addSeparator()
    window.forget_drop_action = edit.addAction("Ask again where dropped images go", lambda: QSettings().remove("dataset/drop_choice"))
    help_ = window.menuBar().addMenu("&Help")
    window.guide_action = help_.addAction("&User guide", window.show_guide)
    window.guide_action.setShortcut("F1")
    help_.addAction("About LoRA Studio", window.show_about)


def _label(action: QAction, verb: str, what: str) -> None:
    # The stack outlives the menu while the window is torn down; it may still announce a change.
    if shiboken6.isValid(action):
        action.setText(f"{verb} {what}" if what else verb)
