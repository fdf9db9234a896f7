"""The engine's human log (its stderr), read-only and capped so a week-long run cannot eat the memory."""

from __future__ import annotations

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

DEFAULT_MAX_LINES = 5000


class LogView(QPlainTextEdit):
    def __init__(self, parent: QWidget | None = None, max_lines: int = DEFAULT_MAX_LINES):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)  # the undo stack would keep every trimmed line alive
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setMaximumBlockCount(max_lines)  # Qt drops the oldest lines itself
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("The training log appears here.")

    def append_line(self, line: str) -> None:
        # Follow the tail only when the artist has not scrolled up to read something.
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 2
        self.appendPlainText(line)
        if at_bottom:
            bar.setValue(bar.maximum())

    def line_count(self) -> int:
        return 0 if self.document().isEmpty() else self.blockCount()
