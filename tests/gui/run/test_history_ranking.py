"""The run history marks each run's recommended checkpoint, with its sentence (ranking.json read back)."""

from __future__ import annotations

from fake_engine import make_run_dir, replay_run
from PySide6.QtCore import Qt
from ranking_helpers import sentence, write_ranking

from lora_studio.core.runs import RunDir
from lora_studio.gui.run.history import RunHistory, RunListModel
from lora_studio.gui.run.run_model import RunModel

COLUMN = RunListModel.COLUMNS.index("Recommended")


def _cell(history: RunHistory, run_id: str, role=Qt.ItemDataRole.DisplayRole):
    row = [r.run_id for r in history.runs()].index(run_id)
    return history.model.data(history.model.index(row, COLUMN), role)


def test_the_recommended_checkpoint_is_marked_with_its_sentence(qtbot, runs_dir):
    ranked = replay_run(make_run_dir(runs_dir, "20260101-120000"))
    write_ranking(ranked, 20)
    replay_run(make_run_dir(runs_dir, "20260102-120000"))  # trained with ranking off: no file
    broken = replay_run(make_run_dir(runs_dir, "20260103-120000"))
    (broken / "ranking.json").write_text("{ cut short", encoding="utf-8")

    history = RunHistory()
    qtbot.addWidget(history)
    history.show()
    history.set_runs_dir(runs_dir)
    assert _cell(history, "20260101-120000") == "★ Step 20"
    assert _cell(history, "20260101-120000", Qt.ItemDataRole.ToolTipRole) == sentence(20)
    assert _cell(history, "20260102-120000") is None and _cell(history, "20260103-120000") is None

    history.select_run(ranked)
    assert history.recommendation_label.isVisible()
    assert history.recommendation_label.text() == f"★ Recommended — {sentence(20)}"
    history.select_run(runs_dir / "20260102-120000")
    assert not history.recommendation_label.isVisible()

    # A run training again (resumed) is not marked by the ranking of its earlier end.
    history.select_run(ranked)
    live = RunModel()
    history.follow(live)
    live.begin(RunDir(ranked), fresh=False, notice="Starting the training engine…")
    assert _cell(history, "20260101-120000") is None and not history.recommendation_label.isVisible()
    live.end()
    write_ranking(ranked, 40)  # the resumed run ranked again at its end
    history.refresh()
    assert _cell(history, "20260101-120000") == "★ Step 40"
    assert history.recommendation_label.text() == f"★ Recommended — {sentence(40)}"
