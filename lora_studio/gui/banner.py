"""A message strip for errors and warnings, with the engine's hint and, when the error carries one, a
button that applies its fix (out of memory: "Apply and resume" with the next smaller settings).

Never a modal dialog: the artist should be able to read the message and the log together.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from lora_studio.gui.settings.places import say

HINT_LINES = 8  # a crash's hint is the end of the log; the banner quotes only its last lines


class Banner(QFrame):
    """An error (red) or a warning (amber), with the engine's hint and an optional action button."""

    # Fixed light colours with their own text colour, so the banner reads the same in a dark theme.
    # The ✕ too: a dark theme's light button text would vanish on the light strip.
    STYLE = ("Banner {{ background: {0}; border: 1px solid {1}; border-radius: 4px; }} "
             "QLabel, QToolButton {{ color: {2}; }} QToolButton {{ font-weight: bold; }}")
    STYLES = {
        "error": STYLE.format("#fde3e1", "#e3a29c", "#5c0b07"),
        "warning": STYLE.format("#fff3d4", "#e6c872", "#4d3a00"),
    }
    EARLIER_SHOWN = 5  # earlier warnings listed under the newest; the rest are counted

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.kind = ""
        self._earlier_count = 0
        self._action: Callable[[], None] | None = None
        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hint_label = QLabel(self)
        self.hint_label.setWordWrap(True)
        self.hint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.earlier_label = QLabel(self)  # the run's earlier warnings: none is lost behind the newest
        self.earlier_label.setWordWrap(True)
        self.earlier_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.earlier_label.hide()
        self.action_button = QPushButton(self, clicked=self._act)
        self.action_button.hide()
        close = QToolButton(self, text="✕", autoRaise=True, clicked=self.dismiss)
        close.setToolTip("Hide this message")
        text = QVBoxLayout()
        text.addWidget(self.message_label)
        text.addWidget(self.hint_label)
        text.addWidget(self.earlier_label)
        layout = QHBoxLayout(self)
        layout.addLayout(text, 1)
        layout.addWidget(self.action_button, 0, Qt.AlignmentFlag.AlignVCenter)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, kind: str, message: str, hint: str = "",
                     action: tuple[str, Callable[[], None]] | None = None, earlier: list[str] | None = None) -> None:
        """earlier: the messages that came before this one (oldest first), listed under it."""
        if kind == "warning" and self.kind == "error" and self.isVisible():
            return  # a warning must not cover up the error that ended the run
        self.kind = kind
        self.setStyleSheet(self.STYLES[kind])
        # The engine names settings by their keys (as the CLI does); the app says the labels on screen.
        self.message_label.setText(f"<b>{'⚠' if kind == 'warning' else '✖'} {_html(say(message))}</b>")
        multi_line = "\n" in hint.strip()
        if multi_line:  # the end of a log: quoted as it is
            hint = "\n".join(hint.strip().splitlines()[-HINT_LINES:])
        else:
            hint = say(hint)
        self.hint_label.setFont(QFontDatabase.systemFont(
            QFontDatabase.SystemFont.FixedFont if multi_line else QFontDatabase.SystemFont.GeneralFont))
        self.hint_label.setText(hint)
        self.hint_label.setVisible(bool(hint))
        self._show_earlier(earlier or [])
        self._action = action[1] if action else None
        self.action_button.setText(action[0] if action else "")
        self.action_button.setVisible(action is not None)
        self.show()

    def earlier_count(self) -> int:
        return self._earlier_count

    def _show_earlier(self, earlier: list[str]) -> None:
        self._earlier_count = len(earlier)
        newest_first = list(reversed(earlier))
        lines = [f"• {_html(say(m))}" for m in newest_first[:self.EARLIER_SHOWN]]
        if len(earlier) > self.EARLIER_SHOWN:
            lines.append(f"… and {len(earlier) - self.EARLIER_SHOWN} more (open the Log to see them all)")
        heading = "Also: 1 warning" if len(earlier) == 1 else f"Also: {len(earlier)} warnings"
        self.earlier_label.setText(f"{heading}, newest first:<br>" + "<br>".join(lines) if lines else "")
        self.earlier_label.setVisible(bool(lines))

    def dismiss(self) -> None:
        self.kind = ""
        self._action = None
        self.action_button.hide()
        self.hide()

    def _act(self) -> None:
        action = self._action
        self.dismiss()
        if action is not None:
            action()


def _html(text: str) -> str:
    return html.escape(text, quote=False)
