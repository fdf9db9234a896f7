"""The training loss over steps: raw values as faint dots, an exponential moving average as the line,
and the validation loss (held-out images, fixed noise: comparable from step to step) as its own line.

Diffusion loss is dominated by the random timestep of each batch, so the raw values jump around; the
smoothed line is the one an artist can read a trend from. The average's window grows with the run
(5% of the points so far, 3 to 100 points): a fixed window is either too heavy for a short run, where
the line lags far behind the points, or too light for a long one, where it is as noisy as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


WINDOW_FRACTION = 0.05
MIN_WINDOW, MAX_WINDOW = 3.0, 100.0
REDRAW_MS = 100  # a fast run sends many points a second; redraw at most this often


class LossChart(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._steps: list[int] = []
        self._losses: list[float] = []
        self._smoothed: list[float] = []
        self._redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_MS, timeout=self._redraw)
        self._empty: bool | None = None  # showing the placeholder on bare axes (None: not drawn yet)

        self._readout = QLabel(self)
        self._plot = pg.PlotWidget(self)
        self._style_plot()
        item = self._plot.getPlotItem()
        accent = self.palette().color(QPalette.ColorRole.Highlight)
        faint = QColor(accent)
        faint.setAlpha(70)
        self._raw_item = item.plot([], [], pen=None, symbol="o", symbolSize=4, symbolPen=None, symbolBrush=faint)
        self._smooth_item = item.plot([], [], pen=pg.mkPen(accent, width=2))
        # Orange against the blue accent: two losses, told apart at a glance (and named in the readout).
        self._validation: list[tuple[int, float]] = []
        self._validation_item = item.plot([], [], pen=pg.mkPen(QColor(240, 150, 40), width=2), symbol="s",
                                          symbolSize=6, symbolPen=None, symbolBrush=QColor(240, 150, 40))

        # With no points pyqtgraph would show a -0.5..0.5 range of made-up numbers; an empty chart says what
        # it will show instead, on bare axes.
        self._placeholder = pg.TextItem("The loss appears here once training starts.",
                                        color=self.palette().color(QPalette.ColorRole.PlaceholderText), anchor=(0.5, 0.5))
        self._placeholder.setPos(0.5, 0.5)
        item.addItem(self._placeholder, ignoreBounds=True)
        # Steps and losses are never negative: around a single point (the step-0 validation loss, before any
        # training step) pyqtgraph would otherwise centre a -0.5..0.5 range on it.
        item.getViewBox().setLimits(xMin=0, yMin=0)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._readout)
        layout.addWidget(self._plot, 1)
        self._update_readout()
        self._show_empty(True)

    def _style_plot(self) -> None:
        # Match the app's palette instead of pyqtgraph's black oscilloscope look.
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.Text)
        self._plot.setBackground(pal.color(QPalette.ColorRole.Base))
        item = self._plot.getPlotItem()
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(pal.color(QPalette.ColorRole.Mid)))
            axis.setTextPen(pg.mkPen(text))
            axis.enableAutoSIPrefix(False)  # "loss (x0.001)" with values of 150 reads as nonsense
        item.setLabel("bottom", "step")
        item.setLabel("left", "loss")
        item.showGrid(x=True, y=True, alpha=0.15)
        item.setMenuEnabled(False)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        self._plot.setMinimumHeight(160)

    # --- public API ---------------------------------------------------------------------------------

    def add_point(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        if self._steps and step <= self._steps[-1]:
            # A resumed run repeats the steps after its last checkpoint: the new values replace the old.
            keep = next((i for i, s in enumerate(self._steps) if s >= step), len(self._steps))
            self._truncate(keep)
        self._append(step, loss)
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def set_points(self, points: Iterable[tuple[int, float]]) -> None:
        self._truncate(0)
        for step, loss in points:
            if math.isfinite(loss):
                if self._steps and step <= self._steps[-1]:
                    keep = next(i for i, s in enumerate(self._steps) if s >= step)
                    self._truncate(keep)
                self._append(step, loss)
        self._redraw()
        self._plot.getPlotItem().enableAutoRange()

    def set_validation(self, points: Iterable[tuple[int, float]]) -> None:
        """The validation losses so far ((step, loss), one per evaluation)."""
        points = [(s, v) for s, v in points if math.isfinite(v)]
        if points == self._validation:
            return
        self._validation = points
        self._validation_item.setData(np.asarray([s for s, _ in points], dtype=float),
                                      np.asarray([v for _, v in points], dtype=float))
        self._show_empty(not self._steps and not points)
        self._update_readout()

    def validation(self) -> list[tuple[int, float]]:
        return list(self._validation)

    def clear(self) -> None:
        self.set_points([])
        self.set_validation([])

    def point_count(self) -> int:
        return len(self._steps)

    def points(self) -> list[tuple[int, float]]:
        return list(zip(self._steps, self._losses))

    def smoothed(self) -> list[float]:
        return list(self._smoothed)

    def is_empty_view(self) -> bool:
        """The chart shows its placeholder on bare axes (no numbers) rather than a plot."""
        return bool(self._empty)

    # --- internals ----------------------------------------------------------------------------------

    def _append(self, step: int, loss: float) -> None:
        n = len(self._steps)
        if n == 0:
            smoothed = loss  # starting at the first value: no zero-initialised average crawling up
        else:
            window = min(max(n * WINDOW_FRACTION, MIN_WINDOW), MAX_WINDOW)
            smoothed = self._smoothed[-1] + (loss - self._smoothed[-1]) / window
        self._steps.append(step)
        self._losses.append(loss)
        self._smoothed.append(smoothed)

    def _truncate(self, keep: int) -> None:
        del self._steps[keep:], self._losses[keep:], self._smoothed[keep:]

    def _redraw(self) -> None:
        self._redraw_timer.stop()
        x = np.asarray(self._steps, dtype=float)
        self._raw_item.setData(x, np.asarray(self._losses, dtype=float))
        self._smooth_item.setData(x, np.asarray(self._smoothed, dtype=float))
        self._show_empty(not self._steps and not self._validation)
        self._update_readout()

    def _show_empty(self, empty: bool) -> None:
        if empty == self._empty:
            return  # only a change re-ranges: the artist's zoom stays while points arrive
        self._empty = empty
        item = self._plot.getPlotItem()
        self._placeholder.setVisible(empty)  # (also what is_empty_view reads)
        for name in ("left", "bottom"):
            item.getAxis(name).setStyle(showValues=not empty)
        if empty:
            item.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        else:
            item.enableAutoRange()
            item.getViewBox().updateAutoRange()  # now, not at the next paint: the points are clipped to the view

    def _update_readout(self) -> None:
        if self._steps:
            text = f"Loss at step {self._steps[-1]:,}: {self._losses[-1]:.4f}  ·  smoothed {self._smoothed[-1]:.4f}"
        else:
            text = "Loss: no steps yet"
        if self._validation:
            step, value = self._validation[-1]
            text += f"  ·  validation {value:.4f} (step {step:,})"
        self._readout.setText(text)
