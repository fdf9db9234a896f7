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
