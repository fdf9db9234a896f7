"""A project's past runs as a table, newest first (the summaries are core/runs.py's), each with the
checkpoint its ranking recommends and, for the selected run, the one sentence saying why.

The run training now is the Train tab's RunModel: its row says Training… and shows the step and loss the
engine reports, read from the RunModel as the row is drawn. The table reads the run's files when it
begins and when it ends: re-reading every run's log at each step would cost more than the table is worth.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QEvent, QModelIndex, QObject, QPersistentModelIndex, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton, QStyle, QTreeView,
                               QVBoxLayout, QWidget)

from lora_studio.core import events as ev
from lora_studio.core.ranking import Recommendation, read_ranking
from lora_studio.core.run_state import RunState
from lora_studio.core.runs import RunDir, RunSummary, summaries
from lora_studio.gui.run.run_model import RunModel


def _typical_runs() -> list[RunSummary]:
    """What the table shows whole at its narrowest (RunHistory.minimumSizeHint): a run of 9,999 steps,
    started in any month (their names differ in width), training or ended in any way but interrupted.
    "Interrupted (no checkpoint)", the export's name and a longer run's Status elide instead."""
    run = RunSummary(run_dir=Path(), status="running", step=9_999, total_steps=9_999, loss=0.1234)
    ended = [dataclasses.replace(run, status=s, status_word=RunState.replay([ev.Finished(status=s)]).status_word())
             for s in ("completed", "stopped", "failed")]
    started = [dataclasses.replace(run, started_at=dt.datetime(2026, month, 28, 23, 58).timestamp()) for month in range(1, 13)]
    return [run, *ended, *started]


class RunListModel(QAbstractTableModel):
    # No column for the run's folder name: it is the time it started, which "Started" says more briefly (the
    # tooltip names the folder), so Step, Loss and Exported fit beside it at the tab's default width.
    COLUMNS = ("Started", "Status", "Step", "Loss", "Recommended", "Exported")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.runs: list[RunSummary] = []  # as read from the runs' folders
        self.rankings: list[Recommendation | None] = []
        self.live: RunModel | None = None  # the Train tab's run, which knows the training run's step before its files do

    def live_dir(self) -> Path | None:
        """The run an engine is training now, if any."""
        return self.live.run_dir if self.live is not None and self.live.live else None

    def summary(self, row: int) -> RunSummary:
        """The row's run as the table shows it: the run training now with its start, step and loss as the
        engine last reported them (its event log is read again only when it ends)."""
        run = self.runs[row]
        if self.live is None or run.run_dir != self.live_dir():
            return run
        state = self.live.state
        started = state.started_at if state.started_at is not None else run.started_at
        return dataclasses.replace(run, started_at=started, step=state.step, total_steps=state.total_steps, loss=state.loss)

    def live_changed(self) -> None:
        """The training run's state moved on: redraw its row."""
        row = next((i for i, r in enumerate(self.runs) if r.run_dir == self.live_dir()), None)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))

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
        run = self.summary(index.row())
        col = self.COLUMNS[index.column()]
        if col == "Recommended":
            return self._recommended(self.rankings[index.row()], role)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(run, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == "Status":
                return f"{run.status_text()}: {run.error}" if run.error else run.status_text()
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
        self._listed_live: Path | None = None  # the training run as the last refresh listed it
        self.model = RunListModel(self)
        self.view = QTreeView(self)
        self.view.setModel(self.model)
        self.view.setRootIsDecorated(False)
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # Status and the export's name elide (_fit_columns) and keep their beginning: every export's name
        # ends in .safetensors, which would take all a narrow column's room.
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        # _fit_columns sizes every column to the viewport (a stretched last section would not shrink below
        # its default size, 100 px, and the table would need its horizontal scrollbar again).
        self.view.header().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.header().setStretchLastSection(False)
        self.view.viewport().installEventFilter(self)
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

    def follow(self, live: RunModel) -> None:
        """Take the run training now from `live`, the Train tab's run: its event log alone cannot tell a
        live run from a crash, and its files lag behind the steps the engine reports."""
        self.model.live = live
        live.changed.connect(self._on_live_changed)
        self.refresh()

    def refresh(self) -> None:
        selected = self.selected_run()
        active = self._listed_live = self.model.live_dir()
        runs = summaries(self._runs_dir)
        runs = [dataclasses.replace(r, status="running") if r.run_dir == active else r for r in runs]
        if active and not any(r.run_dir == active for r in runs):
            runs.insert(0, RunSummary(run_dir=active, status="running"))
        # Re-selecting the same run after a reload is not a new choice: do not announce it again.
        self.view.selectionModel().blockSignals(True)
        try:
            self.model.set_runs(runs)
            self._select(selected)
        finally:
            self.view.selectionModel().blockSignals(False)
        self._fit_columns()
        self._empty.setVisible(not runs)
        self._open.setEnabled(self.selected_run() is not None)
        self._show_recommendation()

    def runs(self) -> list[RunSummary]:
        """The runs as the table shows them."""
        return [self.model.summary(row) for row in range(len(self.model.runs))]

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

    def minimumSizeHint(self) -> QSize:
        # The Train tab's splitter gives the history no less: at the window's default size the table then
        # shows every column without a horizontal scrollbar.
        hint = super().minimumSizeHint()
        return QSize(max(hint.width(), self._table_width()), hint.height())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.view.viewport() and event.type() == QEvent.Type.Resize:
            self._fit_columns()
        return super().eventFilter(watched, event)

    def _table_width(self) -> int:
        """The width that shows the typical runs' texts whole, the export's column at its header's width,
        with a vertical scrollbar beside them."""
        view, header, fm = self.view, self.view.header(), self.view.fontMetrics()
        style = view.style()
        margins = 2 * (style.pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view) + 1)  # as a cell has
        runs = _typical_runs()
        texts = {col: [RunListModel._text(run, col) for run in runs] for col in RunListModel.COLUMNS}
        texts["Recommended"] = [RunListModel._recommended(Recommendation(runs[0].step, "", 0.0), Qt.ItemDataRole.DisplayRole)]
        texts["Exported"] = []
        width = sum(max([header.sectionSizeHint(c)] + [fm.horizontalAdvance(t) + margins for t in texts[col]])
                    for c, col in enumerate(RunListModel.COLUMNS))
        return width + style.pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, view) + 2 * view.frameWidth()

    def _fit_columns(self) -> None:
        """Every column within the viewport: dates and numbers as wide as their text (a number cut short
        misleads), Status as wide as its text while Exported keeps its header's width, and Exported, last,
        over the rest. Those two elide, with the whole text in their tooltips."""
        view, header = self.view, self.view.header()
        least = [header.sectionSizeHint(c) for c in range(self.model.columnCount())]  # the header's text
        need = [max(w, view.sizeHintForColumn(c)) for c, w in enumerate(least)]
        status, exported = RunListModel.COLUMNS.index("Status"), len(need) - 1
        room = view.viewport().width() - (sum(need[:exported]) - need[status])  # beside the dates and numbers
        need[status] = max(least[status], min(need[status], room - least[exported]))
        need[exported] = max(least[exported], room - need[status])
        for col, w in enumerate(need):
            header.resizeSection(col, w)

    def _on_live_changed(self, event: ev.Event | None) -> None:
        if self.model.live_dir() != self._listed_live:
            self.refresh()  # a run began or ended training: its files say how it ended
        elif isinstance(event, (ev.Started, ev.Progress, ev.Finished)):
            self.model.live_changed()
            self._fit_columns()  # its step may have gained a digit

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
