"""The Compare grid marks the recommended checkpoint's row and shows its sentence above the grid."""

from __future__ import annotations

import json

import pytest
from fake_engine import make_run_dir
from PIL import Image
from ranking_helpers import sentence, write_ranking

from lora_studio.gui.compare.dialog import CompareDialog


def _checkpoint(run_dir, step):
    folder = run_dir / "checkpoints" / f"step_{step:06d}"
    folder.mkdir(parents=True)
    (folder / "lora.safetensors").write_bytes(b"")
    (folder / "state.json").write_text("{}", encoding="utf-8")


@pytest.fixture
def grid_dir(runs_dir):
    """A run with checkpoints at 20 and 40 and one saved comparison of them (base row, then strength 1)."""
    run_dir = make_run_dir(runs_dir, "20260101-120000")
    for step in (20, 40):
        _checkpoint(run_dir, step)
    folder = run_dir / "compare" / "20260101-130000"
    folder.mkdir(parents=True)
    cells = []
    for step in (0, 20, 40):
        name = f"step_{step:06d}_s{1.0 if step else 0.0:.2f}_t1_p0.png"
        Image.new("RGB", (8, 8), (step * 5, 90, 160)).save(folder / name)
        cells.append({"step": step, "strength": 1.0 if step else 0.0, "trigger": True, "prompt_index": 0,
                      "prompt": "a castle", "seed": 7, "file": name})
    (folder / "grid.json").write_text(json.dumps({"status": "completed", "cells": cells}), encoding="utf-8")
    return folder


def _dialog(qtbot, run_dir) -> CompareDialog:
    dialog = CompareDialog(run_dir, lora_dirs=[])
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_the_runs_recommended_checkpoint_is_starred_with_its_sentence(qtbot, grid_dir):
    run_dir = grid_dir.parent.parent
    write_ranking(run_dir, 20)
    dialog = _dialog(qtbot, run_dir)
    label = dialog.grid_pane.recommendation_label
    assert label.isVisible() and sentence(20) in label.text() and "Recommended" in label.text()
    assert "★ Step 20" in dialog.grid.row_header(20) and "recommended" in dialog.grid.row_header(20)
    assert "★" not in dialog.grid.row_header(40) and "recommended" not in dialog.grid.row_header(40)
    assert dialog.grid.row_labels() == ["Base model", "Step 20", "Step 40"]

    dialog.select_cell(next(c for c in dialog._results.cells.values() if c.step == 20))
    assert "recommended · chosen" in dialog.grid.row_header(20)  # the star stays on the picked row
    dialog.wait_for_images()


def test_a_ranked_grid_shows_its_own_ranking(qtbot, grid_dir):
    run_dir = grid_dir.parent.parent
    write_ranking(run_dir, 20)
    write_ranking(grid_dir, 40)  # `compare --rank` wrote it beside this grid
    dialog = _dialog(qtbot, run_dir)
    assert sentence(40) in dialog.grid_pane.recommendation_label.text()
    assert "★ Step 40" in dialog.grid.row_header(40) and "★" not in dialog.grid.row_header(20)
    dialog.wait_for_images()


def test_without_a_ranking_nothing_is_marked(qtbot, grid_dir):
    run_dir = grid_dir.parent.parent
    (run_dir / "ranking.json").write_text("not json", encoding="utf-8")
    dialog = _dialog(qtbot, run_dir)
    assert not dialog.grid_pane.recommendation_label.isVisible()
    assert not any("★" in dialog.grid.row_header(s) or "recommended" in dialog.grid.row_header(s) for s in (20, 40))
    dialog.wait_for_images()
