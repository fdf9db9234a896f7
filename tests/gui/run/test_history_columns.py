"""The Runs table at the window's default size, in the app's own look: every column in sight, none cut
below its header, no horizontal scrollbar."""

from __future__ import annotations

import pytest
from fake_engine import make_run_dir, replay_run
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from ranking_helpers import write_ranking

from lora_studio.core import events as ev
from lora_studio.gui.app import make_app
from lora_studio.gui.main_window import MainWindow
from lora_studio.gui.run.history import RunListModel
from lora_studio.gui.window_layout import DEFAULT_SIZE

from dataset_helpers import isolated_settings, make_base_model, make_project  # noqa: F401 (fixture)

WHOLE = ("Started", "Step", "Loss", "Recommended")  # dates and numbers: never cut short


@pytest.fixture
def app_look(qapp, isolated_settings):
    """The look the app runs with (Fusion, its 10 pt font, its style sheet): the widths depend on it.
    Put back afterwards, names included, for the tests that follow."""
    before = (qapp.style().name(), qapp.font(), qapp.palette(), qapp.styleSheet(),
              qapp.applicationName(), qapp.organizationName())
    make_app()
    yield
    style, font, palette, sheet, app_name, org_name = before
    QApplication.setStyle(style)
    qapp.setFont(font)
    qapp.setPalette(palette)
    qapp.setStyleSheet(sheet)
    qapp.setApplicationName(app_name)
    qapp.setOrganizationName(org_name)


def _write_log(run_dir, *events: ev.Event) -> None:
    (run_dir / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in events), encoding="utf-8")


def _progress(step: int, total: int) -> ev.Progress:
    return ev.Progress(step=step, total_steps=total, epoch=1, loss=0.1234, lr=1e-4, samples_per_s=2.0, eta_s=60.0)


def _many_runs(runs_dir, count: int) -> None:
    """Runs with the table's widest texts: thousands of steps, long export names, the longest status word;
    enough of them that the table needs its vertical scrollbar."""
    for i in range(count):
        run = make_run_dir(runs_dir, f"20260201-{i:06d}")
        started = ev.Started(run_dir=str(run), total_steps=2_400, model_kind="sdxl")
        if i % 2:
            export = run / "my_character_portrait_style_v12-step002400.safetensors"
            _write_log(run, started, _progress(2_400, 2_400), ev.Finished(status="completed", step=2_400, export_path=str(export)))
        else:
            _write_log(run, started, _progress(1_250, 2_400))  # Interrupted (no checkpoint)


def test_every_column_fits_the_runs_table_at_the_default_window_size(qtbot, app_look, tmp_path):
    project = make_project(tmp_path / "MyStyle", 2, base_model=str(make_base_model(tmp_path)))
    write_ranking(replay_run(make_run_dir(project.runs_dir, "20260101-120000")), 20)
    _many_runs(project.runs_dir, 80)
    w = MainWindow(find_models=False)
    qtbot.addWidget(w)
    w.show()
    assert w.open_project(project.root)
    w.ensure_train_page()
    w.tabs.setCurrentIndex(2)
    w.resize(*DEFAULT_SIZE)
    view, model = w.run_history.view, w.run_history.model
    qtbot.waitUntil(lambda: view.viewport().width() > 0 and view.verticalScrollBar().maximum() > 0)
    qtbot.wait(50)  # the layout settles

    assert w.width() == DEFAULT_SIZE[0]  # the history's room came from the run panel, not a wider window
    header = view.header()
    assert view.horizontalScrollBar().maximum() == 0
    assert header.length() <= view.viewport().width()
    for col, name in enumerate(model.COLUMNS):
        assert header.sectionSize(col) >= header.sectionSizeHint(col), f"{name}'s header is cut"
        if name in WHOLE:
            assert header.sectionSize(col) >= view.sizeHintForColumn(col), f"{name} is cut short"

    # What does not fit is elided, and said whole in the tooltip.
    rows = {r.run_id: row for row, r in enumerate(w.run_history.runs())}
    exported = model.index(rows["20260201-000001"], model.COLUMNS.index("Exported"))
    status = model.index(rows["20260201-000000"], model.COLUMNS.index("Status"))
    assert model.data(exported) == "my_character_portrait_style_v12-step002400.safetensors"
    assert model.data(exported, Qt.ItemDataRole.ToolTipRole).endswith("my_character_portrait_style_v12-step002400.safetensors")
    assert model.data(status) == model.data(status, Qt.ItemDataRole.ToolTipRole) == "Interrupted (no checkpoint)"
    assert model.data(model.index(rows["20260201-000001"], model.COLUMNS.index("Step"))) == "2,400 / 2,400"
    assert model.data(model.index(rows["20260101-120000"], model.COLUMNS.index("Recommended"))) == "★ Step 20"


def test_at_its_narrowest_the_history_still_shows_a_long_runs_numbers_whole(qtbot, app_look, runs_dir):
    """However far the artist drags the Train tab's splitter, the table keeps room for a 9,999-step run."""
    from lora_studio.gui.run.history import RunHistory

    run = make_run_dir(runs_dir, "20260101-120000")
    _write_log(run, ev.Started(run_dir=str(run), total_steps=9_999, model_kind="sdxl"), _progress(9_999, 9_999),
               ev.Finished(status="completed", step=9_999, export_path=str(run / "my_style.safetensors")))
    history = RunHistory()
    qtbot.addWidget(history)
    history.set_runs_dir(runs_dir)
    history.show()
    history.resize(history.minimumSizeHint().width(), 400)
    view, header = history.view, history.view.header()
    qtbot.waitUntil(lambda: view.viewport().width() > 0)
    qtbot.wait(50)
    assert history.model.data(history.model.index(0, RunListModel.COLUMNS.index("Step"))) == "9,999 / 9,999"
    assert view.horizontalScrollBar().maximum() == 0
    for col, name in enumerate(RunListModel.COLUMNS):
        assert header.sectionSize(col) >= header.sectionSizeHint(col), f"{name}'s header is cut"
        if name in WHOLE:
            assert header.sectionSize(col) >= view.sizeHintForColumn(col), f"{name} is cut short"
