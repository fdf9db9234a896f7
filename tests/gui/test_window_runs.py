"""The window and its runs, against the fake engine (a real process): quitting while a run trains, switching
projects, and telling the artist when a run or a comparison ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_engine import fake_engine_command, make_run_dir, replay_run
from PySide6.QtCore import QObject, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices

from lora_studio.core import events as ev
from lora_studio.core.runs import RunDir, read_state
from lora_studio.gui.main_window import MainWindow

from dataset_helpers import isolated_settings, make_base_model, make_project  # noqa: F401 (fixture)


def is_progress(e: ev.Event) -> bool:
    return isinstance(e, ev.Progress)


@pytest.fixture
def window(qtbot, isolated_settings):
    made: list[MainWindow] = []

    def make(project=None, *engine_options: str) -> MainWindow:
        w = MainWindow(find_models=False)
        qtbot.addWidget(w)
        w.show()
        if project is not None:
            assert w.open_project(project.root)
        w.ensure_train_page().set_engine_command(*fake_engine_command(*engine_options))
        w.tabs.setCurrentIndex(2)  # the Train tab, where the artist watches a run
        made.append(w)
        return w

    yield make
    for w in made:
        w.run_panel.shutdown()  # a test that failed mid-run leaves no engine behind (the kill is immediate)
        w.run_panel.gallery._loader.wait(5_000)


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "MyStyle", 2, base_model=str(make_base_model(tmp_path)))


def _quit(w: MainWindow):
    """What Ctrl+Q does: File > Quit, which closes the window."""
    [action] = [a for a in w.menuBar().actions()[0].menu().actions() if a.text() == "&Quit"]
    action.trigger()
    return w.quit_guard.box


def _button(box, text: str):
    return next(b for b in box.buttons() if b.text() == text)


def test_quitting_mid_training_stops_saves_then_closes(qtbot, window, project):
    w = window(project, "--delay", "0.05")
    panel = w.run_panel
    with qtbot.waitSignal(panel.runner.event, timeout=20_000, check_params_cb=is_progress):
        panel.start()
    box = _quit(w)
    assert w.isVisible() and panel.is_training()  # nothing is thrown away before the artist chooses
    assert box.isVisible() and box.defaultButton().text() == "Stop, save and quit"
    assert sorted(b.text() for b in box.buttons()) == ["Cancel", "Quit without saving", "Stop, save and quit"]

    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        qtbot.mouseClick(box.defaultButton(), Qt.MouseButton.LeftButton)
        assert w.isVisible()  # it waits for the engine to save
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=5_000)
    run_dir, status = finished.args
    state = read_state(RunDir(run_dir))
    assert status == "stopped" and state.status == "stopped"
    assert state.checkpoints == [state.step] and 0 < state.step < 40  # resumable from where it stopped


def test_quit_without_saving_is_the_explicit_choice_and_the_run_then_says_start_again(qtbot, window, project):
    w = window(project, "--delay", "0.2")
    panel = w.run_panel
    with qtbot.waitSignal(panel.runner.event, timeout=20_000, check_params_cb=is_progress):
        panel.start()
    run_dir = panel.current_run()
    _button(_quit(w), "Cancel").click()
    assert w.isVisible() and panel.is_training()

    with qtbot.waitSignal(panel.runner.done, timeout=10_000):
        _button(_quit(w), "Quit without saving").click()
    assert not w.isVisible()
    state = read_state(RunDir(run_dir))
    assert state.finished is None and state.checkpoints == []  # killed before its first checkpoint

    again = window(project)
    reopened = again.run_panel
    assert reopened.current_run() == run_dir
    assert reopened.status_label.text() == "Training did not finish. No checkpoint was saved; start again."
    assert not reopened.resume_button.isEnabled()
    assert reopened.resume_button.toolTip() == "No checkpoint was saved; start again."
    assert again.run_history.runs()[0].status_text() == "Interrupted (no checkpoint)"


def test_the_runs_table_shows_every_column_at_the_default_size(qtbot, window, project):
    replay_run(make_run_dir(project.runs_dir, "20260101-120000"))
    w = window(project, "--delay", "0")
    w.resize(1280, 800)  # the window's first size
    qtbot.waitUntil(lambda: w.run_history.view.viewport().width() > 0)
    view, model = w.run_history.view, w.run_history.model
    visible = view.viewport().width()
    for col, name in enumerate(model.COLUMNS):
        left = view.columnViewportPosition(col)
        assert 0 <= left and left + min(view.columnWidth(col), 40) <= visible, f"{name} is out of sight"
    assert model.data(model.index(0, model.COLUMNS.index("Step"))) == "40 / 40"
    assert model.data(model.index(0, model.COLUMNS.index("Exported"))) == "my_style.safetensors"


def test_switching_projects_shows_only_the_new_projects_runs(qtbot, window, tmp_path):
    a = make_project(tmp_path / "A", 2, base_model=str(make_base_model(tmp_path)))
    b = make_project(tmp_path / "B", 2, base_model=str(make_base_model(tmp_path)))
    a_run = replay_run(make_run_dir(a.runs_dir, "20260101-120000"))
    w = window(a, "--delay", "0")
    panel = w.run_panel
    assert panel.current_run() == a_run and panel.chart.point_count() == 20 and panel.gallery.thumbnail_count() == 8
    assert panel.status_label.text().startswith("Finished: 40 steps.") and panel.banner.kind == "warning"
    assert panel.export_button.isEnabled() and panel.compare_button.isEnabled() and panel.show_folder_button.isVisible()

    assert w.open_project(b.root)  # B has no run: nothing of A's is left on the Train tab
    assert panel.current_run() is None
    assert (panel.chart.point_count(), panel.gallery.thumbnail_count(), panel.status_label.text()) == (0, 0, "Ready.")
    assert (panel.progress_bar.value(), panel.progress_bar.format()) == (0, "")
    assert panel.banner.kind == "" and not panel.banner.isVisible() and not panel.show_folder_button.isVisible()
    assert not panel.export_button.isEnabled() and not panel.compare_button.isEnabled()
    assert panel.open_export_dialog() is None and panel.open_compare_dialog() is None
    assert w.run_history.runs() == [] and panel.log_view.line_count() == 0

    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        panel.start()  # B's own run
    b_run = finished.args[0]
    assert b_run.parent == b.runs_dir and panel.export_button.isEnabled()
    dialog = panel.open_export_dialog()
    assert dialog.run_dir == b_run
    dialog.reject()

    assert w.open_project(a.root)  # and back: A's run, and only A's
    assert panel.current_run() == a_run and [r.run_dir for r in w.run_history.runs()] == [a_run]
    assert panel.chart.point_count() == 20
    dialog = panel.open_export_dialog()
    assert dialog.run_dir == a_run
    dialog.reject()

    w.close_project()
    assert panel.current_run() is None and not panel.export_button.isEnabled()


class _Opened(QObject):
    def __init__(self):
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url)


def test_the_end_of_a_run_or_a_comparison_is_told(qtbot, window, project):
    w = window(project, "--delay", "0.01")
    w.store.set("sample.prompts", ["a castle on a hill"])  # something to compare the checkpoints with
    panel = w.run_panel
    titles: list[str] = []
    notes: list[tuple] = []
    w.windowTitleChanged.connect(titles.append)
    w.notifier.shown.connect(lambda *note: notes.append(note))
    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        panel.start()
    run_dir = finished.args[0]
    assert "50% — MyStyle — LoRA Studio" in titles and "100% — MyStyle — LoRA Studio" in titles  # steps 20 and 40 of 40
    assert w.windowTitle() == "LoRA Studio — MyStyle"
    assert notes == [("Training finished", f"Finished: 40 steps. Saved my_style.safetensors in {run_dir}.", False)]

    opened = _Opened()
    QDesktopServices.setUrlHandler("file", opened, "open")
    try:
        qtbot.mouseClick(panel.show_folder_button, Qt.MouseButton.LeftButton)
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert [Path(u.toLocalFile()) for u in opened.urls] == [run_dir]

    dialog = panel.open_compare_dialog()
    with qtbot.waitSignal(dialog._process.done, timeout=15_000):
        dialog.generate()
    assert notes[-1][0] == "Comparison finished" and notes[-1][1].startswith("Done: ") and notes[-1][2] is False
    dialog.wait_for_images(5_000)
    dialog.close()

    panel.set_engine_command(*fake_engine_command("--crash-after", "12"))
    with qtbot.waitSignal(panel.run_finished, timeout=20_000):
        panel.start()
    title, message, failed = notes[-1]
    assert (title, failed) == ("Training failed", True)
    assert message.startswith("Training did not finish. No checkpoint was saved; start again. The LoRA Studio engine")


def test_start_refuses_what_the_ready_line_knows_would_fail_and_makes_no_run(qtbot, window, tmp_path):
    gone = make_project(tmp_path / "Gone", 2, base_model=str(tmp_path / "moved" / "model.safetensors"))
    w = window(gone)
    panel = w.run_panel
    qtbot.waitUntil(lambda: w.model.rowCount() == 2, timeout=5_000)  # the dataset is read
    assert "Before training" in w.ready_label.text()
    panel.start_button.click()
    # Said at once, in the banner, in the app's words; no engine, no run folder, nothing in the history.
    assert panel.banner.isVisible() and not panel.is_training()
    text = panel.banner.message_label.text()
    assert "Not started: “Base model” (model.safetensors) is not there any more" in text and "model.base" not in text
    assert not gone.runs_dir.exists() or not any(gone.runs_dir.iterdir())
    assert w.run_history.model.rowCount() == 0
    # Every image left out: refused too, with what to do.
    w.store.set("model.base", str(make_base_model(tmp_path)))
    w.store.set("dataset.exclude", ["img000.png", "img001.png"])
    qtbot.waitUntil(lambda: not w.model.included_items(), timeout=5_000)
    panel.start_button.click()
    assert "no image in the dataset can train" in panel.banner.message_label.text()
    assert not gone.runs_dir.exists() or not any(gone.runs_dir.iterdir())
