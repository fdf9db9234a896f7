"""A project's past runs as a table, newest first (the summaries are core/runs.py's), each with the
checkpoint its ranking recommends and, for the selected run, the one sentence saying why."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QLabel, QPushButton, QTreeView, QVBoxLayout, QWidget

from lora_studio.core.ranking import Recommendation, read_ranking
from lora_studio.core.runs import RunDir, RunSummary, summaries


class RunListModel(QAbstractTableModel):
    # No column for the run's folder name: it is the time it started, which "Started" says more briefly (the
    # tooltip names the folder), so Step, Loss and Exported fit beside it at the tab's default width.
    COLUMNS = ("Started", "Status", "Step", "Loss", "Recommended", "Exported")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.runs: list[RunSummary] = []
        self.rankings: list[Recommendation | None] = []

    def set_runs(self, runs: list[RunSummary]) -> None:
        self.beginResetModel()
        self.runs = list(runs)
        # A run in training has no ranking yet (a resumed one's old file speaks of checkpoints since replaced).
        self.rankings = [None if r.status == "running" else read_ranking(RunDir(r.run_dir).ranking) for r in self.runs]
        self.endResetModel()

    def recommendation(self, row: int) -> Recommendation | None:
        return self.rankings[row] if 0 <= row < len(self.rankings) else None

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.runs)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        run = self.runs[index.row()]
        col = self.COLUMNS[index.column()]
        if col == "Recommended":
            return self._recommended(self.rankings[index.row()], role)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(run, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == "Status" and run.error:
                return run.error
            if col == "Exported" and run.exported:
                return run.exported
            if col == "Started" and run.started_at:
                return f"{dt.datetime.fromtimestamp(run.started_at):%Y-%m-%d %H:%M} · {run.run_dir}"
            return str(run.run_dir)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in ("Step", "Loss"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _recommended(rec: Recommendation | None, role):
        if rec is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return f"★ Step {rec.step:,}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return rec.sentence
        return None

    @staticmethod
    def _text(run: RunSummary, col: str) -> str:
        if col == "Started":
            return dt.datetime.fromtimestamp(run.started_at).strftime("%d %b %H:%M") if run.started_at else run.run_id
        if col == "Status":
            return run.status_text()
        if col == "Step":
            return f"{run.step:,} / {run.total_steps:,}" if run.total_steps else f"{run.step:,}"
        if col == "Loss":
            return f"{run.loss:.4f}" if run.loss is not None else ""
        return Path(run.exported).name if run.exported else ""


class RunHistory(QWidget):
    run_selected = Signal(Path)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._runs_dir: Path | None = None
        self._active: Path | None = None
        self.model = RunListModel(self)
        self.view = QTreeView(self)
        self.view.setModel(self.model)
        self.view.setRootIsDecorated(False)
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a long export name keeps both ends
        self.view.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self._empty = QLabel("No runs yet. Runs appear here once you start training.", self)
        self._empty.setEnabled(False)
        self.recommendation_label = QLabel(self)  # the selected run's recommendation, in its one sentence
        self.recommendation_label.setObjectName("muted")
        self.recommendation_label.setWordWrap(True)
        self.recommendation_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.recommendation_label.hide()
        refresh = QPushButton("Refresh", self, clicked=self.refresh)
        self._open = QPushButton("Open folder", self, clicked=self._open_folder)
        self._open.setToolTip("Show the selected run's files (samples, checkpoints, exports)")
        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("<b>Runs</b>", self))
        buttons.addStretch(1)
        buttons.addWidget(refresh)
        buttons.addWidget(self._open)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self._empty)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.recommendation_label)
        self.refresh()

    def set_runs_dir(self, runs_dir: Path | None) -> None:
        self._runs_dir = Path(runs_dir) if runs_dir else None
        self.refresh()

    def set_active_run(self, run_dir: Path | None) -> None:
        """Mark the run that is training now (its event log alone cannot tell a live run from a crash)."""
        self._active = Path(run_dir) if run_dir else None
        self.refresh()

    def refresh(self) -> None:
        selected = self.selected_run()
        runs = summaries(self._runs_dir)
        runs = [dataclasses.replace(r, status="running") if r.run_dir == self._active else r for r in runs]
        if self._active and not any(r.run_dir == self._active for r in runs):
            runs.insert(0, RunSummary(run_dir=self._active, status="running"))
        # Re-selecting the same run after a reload is not a new choice: do not announce it again.
        self.view.selectionModel().blockSignals(True)
        try:
            self.model.set_runs(runs)
            self._select(selected)
        finally:
            self.view.selectionModel().blockSignals(False)
        for col in range(self.model.columnCount() - 1):
            self.view.resizeColumnToContents(col)
        self._empty.setVisible(not runs)
        self._open.setEnabled(self.selected_run() is not None)
        self._show_recommendation()

    def runs(self) -> list[RunSummary]:
        return list(self.model.runs)

    def selected_run(self) -> Path | None:
        index = self.view.currentIndex()
        return self.model.runs[index.row()].run_dir if index.isValid() else None

    def select_run(self, run_dir: Path) -> None:
        """Select run_dir and announce it, as a click would."""
        self._select(Path(run_dir))

    def _select(self, run_dir: Path | None) -> None:
        for row, run in enumerate(self.model.runs):
            if run.run_dir == run_dir:
                self.view.setCurrentIndex(self.model.index(row, 0))
                return

    def _show_recommendation(self) -> None:
        index = self.view.currentIndex()
        rec = self.model.recommendation(index.row()) if index.isValid() else None
        self.recommendation_label.setText(f"★ Recommended — {rec.sentence}" if rec else "")
        self.recommendation_label.setVisible(rec is not None)

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._open.setEnabled(current.isValid())
        self._show_recommendation()
        if current.isValid():
            self.run_selected.emit(self.model.runs[current.row()].run_dir)

    def _open_folder(self) -> None:
        run_dir = self.selected_run()
        if run_dir is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(run_dir)))
