"""The comparison dialog's layout as the window changes size: the grid keeps the width it needs, the large
view takes the rest. A saved grid.json (no engine run) is enough to show a full grid."""

from __future__ import annotations

import json

import pytest

from lora_studio.gui.compare.dialog import SCROLL_BAR_ROOM, CompareDialog
from lora_studio.gui.compare.grid import THUMB_SIZE

CONFIG = 'schema_version = 1\n\n[output]\nname = "my_style"\ntrigger = "my_style"\n'


@pytest.fixture
def open_saved(qtbot, run_dir):
    """Opens the dialog on a saved comparison of one prompt: the base model, then 2 steps x the strengths x
    trigger on / off."""
    made: list[CompareDialog] = []

    def make(strengths: tuple[float, ...] = (0.5, 1.0)) -> CompareDialog:
        (run_dir / "config.toml").write_text(CONFIG, encoding="utf-8")
        folder = run_dir / "compare" / "20260101-130000"
        folder.mkdir(parents=True, exist_ok=True)
        cells = [{"step": 0, "strength": 0, "trigger": trigger, "prompt_index": 0, "file": f"base-{trigger}.png"}
                 for trigger in (True, False)]
        cells += [{"step": step, "strength": strength, "trigger": trigger, "prompt_index": 0,
                   "file": f"{step}-{strength}-{trigger}.png"}
                  for step in (20, 40) for strength in strengths for trigger in (True, False)]
        (folder / "grid.json").write_text(json.dumps({"status": "completed", "cells": cells}), encoding="utf-8")
        dialog = CompareDialog(run_dir)
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.waitExposed(dialog)
        qtbot.wait(20)  # the fit the dialog queued when it laid the grid out, so each test starts from it
        made.append(dialog)
        return dialog

    yield make
    for dialog in made:
        dialog.wait_for_images(5_000)


def _resize(qtbot, dialog, width: int) -> None:
    dialog.resize(width, 800)
    qtbot.wait(20)  # let the layouts (and any fit the dialog queued) settle


def _spare(dialog) -> int:
    """How much wider the grid's pane is than the grid (and its scroll bar) needs."""
    return dialog.splitter.sizes()[0] - (dialog.grid.sizeHint().width() + SCROLL_BAR_ROOM)


def test_the_grid_keeps_the_width_it_needs_when_the_window_is_resized(qtbot, open_saved):
    dialog = open_saved()
    assert dialog.grid.column_labels()[-1] == "Without “my_style” · Strength 1.0"  # 4 columns: a wide grid
    column = THUMB_SIZE + 12
    assert _spare(dialog) == 0  # as opened
    for width in (1600, 2000, 1300, 1180):
        _resize(qtbot, dialog, width)
        # Wider: the extra goes to the large view, not to empty space beside the grid; narrower: the grid
        # still fits, since the large view has room to give.
        assert _spare(dialog) == 0, f"at {width} px the grid's pane has {_spare(dialog)} px unused " \
                                    f"(a column is {column} px)"
        assert dialog.preview_label.width() >= 300


def test_a_window_too_narrow_for_the_grid_keeps_room_for_the_large_view(qtbot, open_saved):
    dialog = open_saved(strengths=(0.25, 0.5, 0.75, 1.0))  # 8 columns: wider than the narrowest window has room for
    _resize(qtbot, dialog, 2000)
    assert _spare(dialog) == 0
    _resize(qtbot, dialog, dialog.minimumSizeHint().width())
    left, right = dialog.splitter.sizes()
    assert left < dialog.grid.sizeHint().width()  # the grid scrolls sideways ...
    assert right >= 300 and dialog.preview_label.width() >= 300  # ... and the large view stays usable
