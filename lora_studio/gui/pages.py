"""The main window's two simplest pages: the welcome page (no project open) and the Train tab's frame.

The Train tab holds part A's RunPanel and RunHistory. They pull in pyqtgraph and numpy (about a
second on a slow machine), so they are built on first need rather than with the window.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QSplitter, QVBoxLayout, QWidget

from lora_studio.core.errors import Problem
from lora_studio.gui.run.start_check import first_problem


class WelcomePage(QWidget):
    new_requested = Signal()
    open_requested = Signal()
    project_chosen = Signal(str)

    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("welcome")
        heading = QLabel(title)
        heading.setObjectName("welcomeTitle")
        subtitle = QLabel("Teach Stable Diffusion your style: drop in your images, press Train, watch it learn.")
        subtitle.setObjectName("muted")
        new = QPushButton("New project…")
        new.setObjectName("primary")
        new.clicked.connect(self.new_requested)
        open_ = QPushButton("Open project…")
        open_.clicked.connect(self.open_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(new)
        buttons.addWidget(open_)
        buttons.addStretch(1)
        self.recent_list = QListWidget()
        self.recent_list.setObjectName("recentList")
        self.recent_list.itemActivated.connect(self._chosen)
        self.recent_list.itemClicked.connect(self._chosen)
        self.recent_title = QLabel("Recent projects")
        self.recent_title.setObjectName("heading")
        column = QVBoxLayout()
        column.addStretch(1)
        column.addWidget(heading)
        column.addWidget(subtitle)
        column.addSpacing(18)
        column.addLayout(buttons)
        column.addSpacing(24)
        column.addWidget(self.recent_title)
        column.addWidget(self.recent_list, 2)
        column.addStretch(1)
        holder = QWidget()
        holder.setLayout(column)
        holder.setMaximumWidth(640)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addWidget(holder, 4)
        outer.addStretch(1)

    def set_recent(self, paths: list[Path]) -> None:
        self.recent_list.clear()
        for path in paths:
            item = QListWidgetItem(f"{path.name}\n{path}")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.recent_list.addItem(item)
        self.recent_title.setVisible(bool(paths))
        self.recent_list.setVisible(bool(paths))

    def _chosen(self, item: QListWidgetItem) -> None:
        self.project_chosen.emit(item.data(Qt.ItemDataRole.UserRole))


class TrainPage(QWidget):
    settings_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_panel = None
        self.run_history = None
        self.ready_label = QLabel()
        self.ready_label.setObjectName("readyLine")
        self.ready_label.setWordWrap(True)
        self.ready_label.setTextFormat(Qt.TextFormat.RichText)
        self.ready_label.linkActivated.connect(lambda _link: self.settings_requested.emit())
        top = QWidget()
        tv = QVBoxLayout(top)
        tv.setContentsMargins(12, 10, 12, 0)
        tv.addWidget(self.ready_label)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        v = QVBoxLayout(self)
        v.setContentsMargins(0, 0, 0, 0)
        v.addWidget(top)
        v.addWidget(self.splitter, 1)

    def build(self) -> bool:
        """Create the run panel and history; False when they already exist."""
        if self.run_panel is not None:
            return False
        from lora_studio.gui.run.history import RunHistory
        from lora_studio.gui.run.panel import RunPanel

        self.run_panel, self.run_history = RunPanel(), RunHistory()
        self.run_panel.attach_history(self.run_history)
        history = QWidget()
        hl = QVBoxLayout(history)
        hl.setContentsMargins(6, 12, 6, 8)
        hl.addWidget(self.run_history)
        self.splitter.addWidget(history)
        self.splitter.addWidget(self.run_panel)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 3)
        state = QSettings().value("main/train_splitter")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.splitter.restoreState(state)
        else:
            self.splitter.setSizes([420, 860])
        return True

    def save_state(self) -> None:
        if self.run_panel is not None:
            QSettings().setValue("main/train_splitter", self.splitter.saveState())

    def set_ready(self, problems: list[Problem], budget: str, memory_warning: str = "") -> None:
        """One line above the run panel: what to fix before Start, or what Start will do (and, when the memory
        estimate says it will not fit, that too: the artist should not learn it from a failed run)."""
        if problems:
            # Named as the Settings tab labels it: “Smallest bucket side” (Advanced settings) is ...
            self.ready_label.setText(f"<b>Before training:</b> {html.escape(first_problem(problems))} "
                                     f"<a href='settings'>Open Settings</a>")
            self.ready_label.setProperty("state", "blocked")
        elif memory_warning:
            self.ready_label.setText(f"<b>Ready to train:</b> {html.escape(budget)}<br>⚠ {html.escape(memory_warning)} "
                                     f"<a href='settings'>Open Settings</a>")
            self.ready_label.setProperty("state", "warn")
        else:
            self.ready_label.setText(f"<b>Ready to train:</b> {html.escape(budget)}")
            self.ready_label.setProperty("state", "ready")
        self.ready_label.style().unpolish(self.ready_label)
        self.ready_label.style().polish(self.ready_label)
