"""RunPanel (and RunHistory) driven through the fake engine: a real process, real files, real widgets."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_engine import RUN_OOM, RUN_SHORT, fake_engine_command, make_run_dir, replay_run
from PySide6.QtCore import Qt

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.errors import UserError
from lora_studio.core.run_state import format_eta, progress_text
from lora_studio.core.runs import RunDir, summarize
from lora_studio.gui.run.history import RunHistory, RunListModel
from lora_studio.gui.run.panel import RunPanel


@pytest.fixture
def panel(qtbot, runs_dir):
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_engine_command(*fake_engine_command())
    panel.set_runs_dir(runs_dir)
    made = iter(range(1, 100))
    panel.set_run_source(lambda: _fresh_run(runs_dir, f"run-{next(made)}"))
    panel.resize(1000, 700)
    panel.show()
    yield panel
    if panel.is_training():
        with qtbot.waitSignal(panel.runner.done, timeout=10_000):
            panel.shutdown()
    panel.gallery._loader.wait(5_000)


def _fresh_run(runs_dir: Path, run_id: str) -> RunDir:
    return RunDir(make_run_dir(runs_dir, run_id))


def test_a_run_fills_progress_chart_and_gallery(qtbot, panel, runs_dir):
    with qtbot.waitSignal(panel.run_started, timeout=5_000) as started:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert started.args == [runs_dir / "run-1"]
    assert not panel.start_button.isEnabled() and panel.stop_button.isEnabled()
    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        pass
    assert finished.args == [runs_dir / "run-1", "completed"]

    bar = panel.progress_bar
    assert (bar.value(), bar.maximum()) == (40, 40)
    assert bar.format().startswith("step 40 / 40 · ") and "it/s" in bar.format()
    assert panel.chart.point_count() == 20
    assert panel.gallery.thumbnail_count() == 8
    qtbot.waitUntil(lambda: panel.gallery.loaded_count() == 8, timeout=5_000)
    # Where the file is, and a button that opens its folder.
    assert panel.status_label.text() == f"Finished: 40 steps. Saved my_style.safetensors in {runs_dir / 'run-1'}."
    assert panel.show_folder_button.isVisible() and panel.export_folder() == runs_dir / "run-1"
    assert panel.banner.kind == "warning"  # the canned run's small-images warning stays readable
    assert panel.start_button.isEnabled() and panel.export_button.isEnabled()
    assert not panel.stop_button.isEnabled() and not panel.resume_button.isEnabled()
    assert panel.log_view.line_count() > 0


def test_a_crash_shows_the_banner_and_start_works_again(qtbot, panel, runs_dir):
    panel.set_engine_command(*fake_engine_command("--crash-after", "12"))
    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        panel.start()
    assert finished.args[1] == "failed"
    assert panel.banner.isVisible() and panel.banner.kind == "error"
    assert "exit code 3" in panel.banner.message_label.text()
    assert "illegal memory access" in panel.banner.hint_label.text()
    # It crashed before its first checkpoint: nothing to resume, and the panel says so.
    assert panel.status_label.text() == "Training did not finish. No checkpoint was saved; start again."
    assert not panel.resume_button.isEnabled()
    assert panel.resume_button.toolTip() == "No checkpoint was saved; start again."
    assert panel.start_button.isEnabled() and not panel.stop_button.isEnabled()

    panel.set_engine_command(*fake_engine_command())
    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert finished.args == [runs_dir / "run-2", "completed"]
    assert panel.banner.kind != "error"
    assert panel.chart.point_count() == 20


def test_the_engines_error_shows_its_message_and_hint(qtbot, panel):
    panel.set_engine_command(*fake_engine_command("--replay", str(RUN_OOM)))
    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        panel.start()
    assert finished.args[1] == "failed"
    assert "The GPU ran out of memory during training" in panel.banner.message_label.text()
    assert panel.banner.hint_label.text().startswith("Try: turn on gradient checkpointing")


def test_out_of_memory_applies_its_fix_and_resumes(qtbot, panel, runs_dir):
    panel.set_engine_command(*fake_engine_command("--replay", str(RUN_OOM)))
    with qtbot.waitSignal(panel.run_finished, timeout=20_000):
        panel.start()
    run_dir = runs_dir / "run-1"
    assert panel.banner.action_button.isVisible()
    assert panel.banner.action_button.text() == "Apply and resume"  # the run saved a checkpoint at step 4

    panel.set_engine_command(*fake_engine_command())
    with qtbot.waitSignal(panel.fix_applied, timeout=5_000) as applied, \
            qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        qtbot.mouseClick(panel.banner.action_button, Qt.MouseButton.LeftButton)
    assert applied.args == [{"train.gradient_checkpointing": True}]
    # The run's own settings now carry the fix (the engine resumes from them), the rest kept as they were.
    saved = config_mod.load(run_dir / "config.toml", check=False)
    assert saved.train.gradient_checkpointing is True and saved.output.name == "my_style"
    assert finished.args == [run_dir, "completed"]
    assert [e.start_step for e in ev.read_jsonl(run_dir / "events.jsonl") if isinstance(e, ev.Started)] == [0, 4]
    assert not panel.banner.isVisible() or panel.banner.kind != "error"



def test_out_of_memory_before_any_checkpoint_tries_the_same_run_again(qtbot, panel, runs_dir, tmp_path):
    no_checkpoint = tmp_path / "oom_at_once.jsonl"
    no_checkpoint.write_text("".join(line for line in RUN_OOM.read_text().splitlines(keepends=True) if '"checkpoint"' not in line))
    panel.set_engine_command(*fake_engine_command("--replay", str(no_checkpoint)))
    with qtbot.waitSignal(panel.run_finished, timeout=20_000):
        panel.start()
    assert panel.banner.action_button.text() == "Apply and try again"

    quiet = tmp_path / "run_without_warnings.jsonl"
    quiet.write_text("".join(line for line in RUN_SHORT.read_text().splitlines(keepends=True) if '"warning"' not in line))
    panel.set_engine_command(*fake_engine_command("--replay", str(quiet)))
    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        qtbot.mouseClick(panel.banner.action_button, Qt.MouseButton.LeftButton)
    run_dir = runs_dir / "run-1"
    assert finished.args == [run_dir, "completed"]  # the same folder: no failed run left behind per attempt
    assert sorted(p.name for p in runs_dir.iterdir()) == ["run-1"]
    assert config_mod.load(run_dir / "config.toml", check=False).train.gradient_checkpointing is True
    logged = [e for e in ev.read_jsonl(run_dir / "events.jsonl") if isinstance(e, ev.Warning)]
    assert "nothing_to_resume" in [e.code for e in logged]  # the engine said it; the panel knew and stayed quiet
    assert not panel.banner.isVisible(), panel.banner.message_label.text()

def test_every_warning_of_a_run_stays_in_sight(qtbot, panel, tmp_path):
    lines = RUN_SHORT.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if '"warning"' in line) + 1
    skipped = [f'{{"v": 1, "type": "warning", "time": 1767261615.0, "message": "Skipped broken file cat_{n}.png: '
               f'it is not an image.", "code": "skipped_image"}}\n' for n in (1, 2)]
    replay = tmp_path / "three_warnings.jsonl"
    replay.write_text("".join(lines[:at] + skipped + lines[at:]))
    panel.set_engine_command(*fake_engine_command("--replay", str(replay)))
    with qtbot.waitSignal(panel.run_finished, timeout=20_000):
        panel.start()
    banner = panel.banner
    assert banner.kind == "warning" and "cat_2.png" in banner.message_label.text()  # the newest on top
    assert banner.earlier_count() == 2 and banner.earlier_label.isVisible()
    earlier = banner.earlier_label.text()
    assert "cat_1.png" in earlier and "smaller than 512 px" in earlier
    assert earlier.index("cat_1.png") < earlier.index("smaller than 512 px")  # newest first


def test_reopening_a_run_that_ran_out_of_memory_still_offers_the_fix(qtbot, panel, runs_dir):
    run_dir = replay_run(make_run_dir(runs_dir, "oom"), "--replay", str(RUN_OOM))
    panel.show_run(run_dir)
    assert panel.banner.kind == "error" and panel.banner.action_button.text() == "Apply and resume"


def test_a_settings_problem_is_shown_and_nothing_starts(qtbot, panel):
    def broken():
        raise UserError("The dataset folder has no images.", hint="Add images to the folder, then start again.")

    panel.set_run_source(broken)
    panel.start()
    assert not panel.is_training()
    assert "The dataset folder has no images." in panel.banner.message_label.text()
    assert panel.banner.hint_label.text() == "Add images to the folder, then start again."


def test_stop_then_resume_continues_the_same_run(qtbot, panel, runs_dir):
    panel.set_engine_command(*fake_engine_command("--delay", "0.03"))
    with qtbot.waitSignal(panel.runner.event, timeout=20_000, check_params_cb=lambda e: isinstance(e, ev.Progress)):
        panel.start()
    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
        assert panel.stop_button.text() == "Force stop"
    assert finished.args == [runs_dir / "run-1", "stopped"]
    stopped_at = summarize(RunDir(runs_dir / "run-1")).step
    assert panel.status_label.text().startswith(f"Stopped at step {stopped_at}.")
    assert panel.resume_button.isEnabled() and panel.start_button.isEnabled()

    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as finished:
        qtbot.mouseClick(panel.resume_button, Qt.MouseButton.LeftButton)
    assert finished.args == [runs_dir / "run-1", "completed"]
    steps = [s for s, _ in panel.chart.points()]
    assert steps == list(range(2, 41, 2))  # the history before the stop, then the resumed steps, no repeats
    assert not panel.resume_button.isEnabled()


def test_opening_a_project_shows_its_newest_run(qtbot, runs_dir):
    replay_run(make_run_dir(runs_dir, "20261130-100000"))
    newest = replay_run(make_run_dir(runs_dir, "20261130-110000"))
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_runs_dir(runs_dir)
    assert panel.current_run() == newest
    assert panel.chart.point_count() == 20
    panel.gallery._loader.wait(5_000)


def test_show_run_restores_chart_gallery_and_status(qtbot, panel, runs_dir):
    run = replay_run(make_run_dir(runs_dir, "old-run"))
    panel.show_run(run)
    assert panel.current_run() == run
    assert panel.chart.point_count() == 20
    assert panel.gallery.thumbnail_count() == 8
    assert [s.step for s in panel.gallery.samples()] == [10, 10, 20, 20, 30, 30, 40, 40]
    # As the live run showed it at its end: the steps and the speed it trained at (no time left to go).
    assert panel.progress_bar.format().startswith("step 40 / 40 · ") and panel.progress_bar.format().endswith(" it/s")
    assert panel.status_label.text() == f"Finished: 40 steps. Saved my_style.safetensors in {run}."
    assert panel.export_button.isEnabled()
    qtbot.waitUntil(lambda: panel.gallery.loaded_count() == 8, timeout=5_000)

    viewer = panel.gallery.open_viewer(panel.gallery.samples()[2])  # step 20, first prompt
    qtbot.waitUntil(lambda: not viewer.pixmap_shown().isNull(), timeout=5_000)
    qtbot.keyClick(viewer, Qt.Key.Key_Right)
    assert (viewer.current().step, viewer.current().index) == (30, 0)


def test_history_lists_runs_and_follows_the_panel(qtbot, panel, runs_dir):
    replay_run(make_run_dir(runs_dir, "a-crashed"), "--crash-after", "30")
    history = RunHistory()
    qtbot.addWidget(history)
    history.set_runs_dir(runs_dir)
    panel.attach_history(history)
    [crashed] = history.runs()
    assert (crashed.status, crashed.step, crashed.checkpoint_steps) == ("interrupted", 30, (20,))
    assert crashed.resumable

    with qtbot.waitSignal(panel.run_started, timeout=5_000):
        panel.start()
    assert history.runs()[0].status == "running"
    with qtbot.waitSignal(panel.run_finished, timeout=20_000):
        pass
    newest = history.runs()[0]
    assert (newest.run_id, newest.status, newest.step, newest.exported.endswith("my_style.safetensors")) == (
        "run-1", "completed", 40, True)
    assert newest.loss == pytest.approx(0.06886, abs=1e-4)

    with qtbot.waitSignal(history.run_selected, timeout=1_000):
        history.select_run(runs_dir / "a-crashed")
    assert panel.current_run() == runs_dir / "a-crashed"
    assert panel.status_label.text() == "Training did not finish. Resume continues from the last checkpoint."
    assert "Continue a-crashed" in panel.resume_button.toolTip()


def test_the_training_runs_row_follows_every_step_not_only_the_checkpoints(qtbot, panel, runs_dir):
    history = RunHistory()
    qtbot.addWidget(history)
    history.set_runs_dir(runs_dir)
    panel.attach_history(history)
    columns = [RunListModel.COLUMNS.index(c) for c in ("Status", "Step", "Loss")]
    shown: list[tuple] = []

    def row_at(event: ev.Event) -> None:
        # Connected after the panel's own handler: the table has had the event.
        if isinstance(event, ev.Progress):
            row = [r.run_dir for r in history.runs()].index(panel.current_run())
            shown.append((event.step, *(history.model.data(history.model.index(row, c)) for c in columns)))

    panel.runner.event.connect(row_at)
    with qtbot.waitSignal(panel.run_finished, timeout=20_000):
        panel.start()
    steps = [e for e in ev.read_jsonl(RUN_SHORT) if isinstance(e, ev.Progress)]  # the checkpoints are at 20 and 40
    assert shown == [(e.step, "Training…", f"{e.step} / 40", f"{e.loss:.4f}") for e in steps]
    assert shown[5] == (12, "Training…", "12 / 40", "0.1638")  # between the checkpoints
    [done] = history.runs()  # and once it ends, its row is its files' again
    assert (done.status, done.step, done.total_steps) == ("completed", 40, 40)


def test_progress_wording():
    assert progress_text(120, 1500, 2.34, 540) == "step 120 / 1,500 · 2.3 it/s · 9 min left"
    assert progress_text(5, 1500, 0.25, 30) == "step 5 / 1,500 · 4.0 s/it · under a minute left"
    assert format_eta(3 * 3600 + 5 * 60) == "3 h 05 min left"


def test_chart_replaces_the_steps_a_resumed_run_repeats(qtbot):
    from lora_studio.gui.run.loss_chart import LossChart

    chart = LossChart()
    qtbot.addWidget(chart)
    chart.set_points([(s, 0.2) for s in range(1, 11)])
    chart.add_point(7, 0.1)  # resumed from the checkpoint at step 6, after a crash at step 10
    assert [s for s, _ in chart.points()] == [1, 2, 3, 4, 5, 6, 7]
    assert chart.smoothed()[:6] == [0.2] * 6 and 0.1 < chart.smoothed()[-1] < 0.2
    chart.add_point(8, float("nan"))
    assert chart.point_count() == 7  # a non-finite loss is not drawn


def test_log_view_keeps_only_the_newest_lines(qtbot):
    from lora_studio.gui.log_view import LogView

    log = LogView(max_lines=50)
    qtbot.addWidget(log)
    for i in range(120):
        log.append_line(f"line {i}")
    assert log.line_count() == 50
    assert log.toPlainText().splitlines()[-1] == "line 119"
