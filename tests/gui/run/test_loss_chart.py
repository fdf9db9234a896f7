"""The loss chart draws the validation loss beside the training loss, and names both in its readout."""

from __future__ import annotations

import math

from lora_studio.core import events as ev
from lora_studio.core.run_state import RunState
from lora_studio.gui.run.loss_chart import LossChart


def test_validation_losses_are_drawn_and_named(qtbot):
    chart = LossChart()
    qtbot.addWidget(chart)
    for step in range(1, 11):
        chart.add_point(step, 0.2 - step * 0.01)
    chart.set_validation([(0, 0.18), (5, 0.15), (10, float("nan")), (10, 0.14)])
    assert chart.validation() == [(0, 0.18), (5, 0.15), (10, 0.14)]
    xs, ys = chart._validation_item.getData()
    assert list(xs) == [0, 5, 10] and all(math.isfinite(y) for y in ys)
    assert "validation 0.1400 (step 10)" in chart._readout.text()
    chart.clear()
    assert chart.validation() == [] and "no steps yet" in chart._readout.text()


def test_the_run_state_feeds_the_chart_the_validation_events():
    state = RunState()
    for e in (ev.Validation(0, 0.2, 4), ev.Validation(50, 0.15, 4)):
        state.apply(e)
    assert state.validation == [(0, 0.2), (50, 0.15)]


def test_an_empty_chart_says_what_it_will_show_instead_of_made_up_numbers(qtbot):
    chart = LossChart()
    qtbot.addWidget(chart)
    left = chart._plot.getPlotItem().getAxis("left")
    assert chart.is_empty_view() and chart._placeholder.isVisible() and not left.style["showValues"]
    chart.set_points([(1, 0.3), (2, 0.25)])
    assert not chart.is_empty_view() and not chart._placeholder.isVisible() and left.style["showValues"]
    chart.clear()
    assert chart.is_empty_view() and not left.style["showValues"]


def test_the_step_0_validation_loss_alone_is_not_centred_on_negative_numbers(qtbot):
    # Before the first training step only the step-0 validation loss exists: one point at x = 0.
    chart = LossChart()
    qtbot.addWidget(chart)
    chart.resize(400, 300)
    chart.set_validation([(0, 0.16)])
    (x0, x1), (y0, y1) = chart._plot.getPlotItem().getViewBox().viewRange()
    assert x0 >= 0 and y0 >= 0 and x1 > 0 and y1 > 0.16
    assert chart._readout.text() == "Loss: no steps yet  ·  validation 0.1600 (step 0)"
