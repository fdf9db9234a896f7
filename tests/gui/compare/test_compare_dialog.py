"""CompareDialog running the fake engine's `compare` subcommand as a real process (real PNGs, real grid.json)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from fake_engine import fake_engine_command, make_run_dir, replay_run
from PySide6.QtCore import Qt

from lora_studio.core import events as ev
from lora_studio.core.runs import RunDir
from lora_studio.gui.compare.dialog import CompareDialog
from lora_studio.gui.compare.grid import has_trigger_variant, load_saved_grid, parse_strengths
from lora_studio.gui.export_dialog import ExportDialog
from lora_studio.gui.run.panel import RunPanel

PROMPTS = ["my_style, a castle on a hill", "my_style, portrait of an old sailor"]
CONFIG = f"""schema_version = 1

[output]
name = "my_style"
trigger = "my_style"

[sample]
prompts = {json.dumps(PROMPTS)}
steps = 30
"""


@pytest.fixture
def compared_run(run_dir):
    """A finished run (checkpoints at steps 20 and 40) with a trigger word and two sample prompts."""
    (run_dir / "config.toml").write_text(CONFIG, encoding="utf-8")
    return replay_run(run_dir)


@pytest.fixture
def open_dialog(qtbot, tmp_path):
    made: list[CompareDialog] = []

    def make(run_dir, *options: str) -> CompareDialog:
        program, prefix = fake_engine_command("--delay", "0", *options)
        dialog = CompareDialog(run_dir, program=program, prefix_args=prefix, lora_dirs=[tmp_path / "loras"])
        qtbot.addWidget(dialog)
        dialog.show()
        made.append(dialog)
        return dialog

    yield make
    for dialog in made:
        if dialog.is_running():
            with qtbot.waitSignal(dialog._process.done, timeout=10_000):
                dialog._process.kill()
        dialog.wait_for_images(5_000)


def _generate(qtbot, dialog) -> None:
    with qtbot.waitSignal(dialog._process.done, timeout=15_000):
        qtbot.mouseClick(dialog.generate_button, Qt.MouseButton.LeftButton)
        assert dialog.generate_button.text() == "Stop" and not dialog.strengths_edit.isEnabled()


def _keys(dialog) -> set[tuple]:
    return {w.key for w in dialog.grid.cell_widgets() if w.cell is not None}


def test_the_grid_fills_as_the_images_arrive(qtbot, compared_run, open_dialog):
    dialog = open_dialog(compared_run)
    assert [dialog.checkpoint_list.item(i).text() for i in range(2)] == ["Step 20", "Step 40  (newest)"]
    assert dialog.trigger_check.isEnabled() and dialog.trigger_check.isChecked()
    assert dialog.sampling_steps.value() == 30  # the run's own sampling steps
    assert dialog.summary_label.text() == "20 images · 2 prompts"
    assert dialog.compare_args() == ["compare", str(compared_run), "--steps", "20,40", "--strengths", "0.5,1.0",
                                     "--sampling-steps", "30"]
    statuses: list[str] = []
    dialog._process.event.connect(lambda e: statuses.append(dialog.status_label.text()) if isinstance(e, ev.CompareCell) else None)
    _generate(qtbot, dialog)

    assert dialog.image_count() == 20
    assert statuses[0].startswith("1 of 20 images") and statuses[11].startswith("12 of 20 images")
    assert dialog.status_label.text().startswith("Done: 20 images.")
    assert dialog.generate_button.text() == "Generate" and dialog.strengths_edit.isEnabled()
    assert dialog.prompt_count() == 2 and dialog.prompt_tabs.isVisible()
    assert dialog.prompt_tabs.tabToolTip(1) == PROMPTS[1]
    assert dialog.grid.row_labels() == ["Base model", "Step 20", "Step 40"]
    assert dialog.grid.column_labels() == [
        "With “my_style” · Strength 0.5", "With “my_style” · Strength 1.0",
        "Without “my_style” · Strength 0.5", "Without “my_style” · Strength 1.0"]
    # One prompt's grid: a base image per trigger state, then 2 checkpoints x 2 strengths x 2 trigger states.
    expected = {(0, 0, True, 0.0), (0, 0, False, 0.0)} | {
        (0, step, trigger, strength) for step in (20, 40) for trigger in (True, False) for strength in (0.5, 1.0)}
    assert _keys(dialog) == expected
    cell = dialog.grid.cell_widget((0, 40, False, 0.5)).cell
    assert (cell.prompt, cell.seed, cell.strength) == ("a castle on a hill", 42, 0.5)
    qtbot.waitUntil(lambda: dialog.grid.loaded_count() == 10, timeout=5_000)
    assert not dialog.grid.cell_widget((0, 20, True, 1.0)).icon().isNull()

    dialog.prompt_tabs.setCurrentIndex(1)
    assert _keys(dialog) == {(1, *k[1:]) for k in expected}
    assert dialog.prompt_label.text() == f"Prompt: “{PROMPTS[1]}” · seed 43"  # the run's seed + prompt index
    qtbot.waitUntil(lambda: dialog.grid.loaded_count() == 10, timeout=5_000)


def test_the_choices_become_the_engines_arguments(qtbot, compared_run, open_dialog):
    dialog = open_dialog(compared_run)
    dialog.checkpoint_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    dialog.strengths_edit.setText("1")
    dialog.trigger_check.setChecked(False)
    dialog.sampling_steps.setValue(12)
    assert dialog.summary_label.text() == "4 images · 2 prompts"
    assert dialog.compare_args() == ["compare", str(compared_run), "--steps", "40", "--strengths", "1.0",
                                     "--sampling-steps", "12", "--no-trigger-variants"]
    _generate(qtbot, dialog)
    # The fake engine keeps only the cells it was asked for: the base model, and step 40 at 1.0 with the trigger.
    assert dialog.image_count() == 4
    assert dialog.grid.row_labels() == ["Base model", "Step 40"]
    assert dialog.grid.column_labels() == ["With “my_style” · Strength 1.0"]
    assert _keys(dialog) == {(0, 0, True, 0.0), (0, 40, True, 1.0)}


def test_strengths_are_checked_as_they_are_typed(qtbot, compared_run, open_dialog):
    dialog = open_dialog(compared_run)
    dialog.strengths_edit.setText("0.5, strong")
    assert not dialog.generate_button.isEnabled()
    assert dialog.strengths_problem.isVisible() and "“strong” is not a number" in dialog.strengths_problem.text()
    dialog.strengths_edit.setText("0.5, 3")
    assert not dialog.generate_button.isEnabled() and "up to 2" in dialog.strengths_problem.text()
    dialog.strengths_edit.setText(" 1.0 ,0.75,, 1")
    assert dialog.generate_button.isEnabled() and not dialog.strengths_problem.isVisible()
    assert parse_strengths(dialog.strengths_edit.text()) == [0.75, 1.0]
    for i in range(dialog.checkpoint_list.count()):
        dialog.checkpoint_list.item(i).setCheckState(Qt.CheckState.Unchecked)
    assert not dialog.generate_button.isEnabled() and dialog.summary_label.text() == "Pick at least one checkpoint."


def test_only_prompts_with_the_trigger_as_a_tag_get_a_without_variant(qtbot, compared_run, open_dialog):
    assert has_trigger_variant("my_style, a castle", "my_style")
    assert has_trigger_variant("a castle, My_Style ", "my_style")
    assert not has_trigger_variant("a castle in my_style", "my_style")  # a word inside a tag stays
    assert not has_trigger_variant("my_style, a castle", "")
    dialog = open_dialog(compared_run)
    dialog.prompts_edit.setPlainText("my_style, a castle on a hill\n\n  a sailor in my_style  \n")
    assert dialog.summary_label.text() == "15 images · 2 prompts"  # (2 + 1) x (base + 2 steps x 2 strengths)
    args = dialog.compare_args()
    assert args[args.index("--prompt"):] == ["--prompt", "my_style, a castle on a hill",
                                             "--prompt", "a sailor in my_style"]
    dialog.prompts_edit.setPlainText("")
    assert not dialog.generate_button.isEnabled() and dialog.summary_label.text() == "Write at least one prompt."


def test_a_run_without_a_trigger_word_compares_prompts_as_written(qtbot, run_dir, open_dialog):
    run = replay_run(run_dir)  # make_run_dir's config: no trigger word, no sample prompts
    dialog = open_dialog(run)
    assert not dialog.trigger_check.isEnabled() and not dialog.trigger_check.isChecked()
    assert "no trigger word" in dialog.trigger_check.toolTip()
    assert not dialog.generate_button.isEnabled() and dialog.summary_label.text() == "Write at least one prompt."
    dialog.prompts_edit.setPlainText("a castle on a hill")
    assert dialog.summary_label.text() == "5 images · 1 prompt"
    assert dialog.compare_args()[-3:] == ["--prompt", "a castle on a hill", "--no-trigger-variants"]
    _generate(qtbot, dialog)
    assert dialog.image_count() == 5 and dialog.prompt_count() == 1 and not dialog.prompt_tabs.isVisible()
    assert dialog.grid.row_labels() == ["Base model", "Step 20", "Step 40"]
    assert dialog.grid.column_labels() == ["Strength 0.5", "Strength 1.0"]
    assert dialog.prompt_label.text() == "Prompt: “a castle on a hill” · seed 42"


def test_a_cell_picks_its_checkpoint_for_export(qtbot, compared_run, open_dialog):
    dialog = open_dialog(compared_run)
    _generate(qtbot, dialog)
    assert not dialog.export_button.isEnabled()

    qtbot.mouseClick(dialog.grid.cell_widget((0, 0, True, 0.0)), Qt.MouseButton.LeftButton)
    assert dialog.selected_step() is None and not dialog.export_button.isEnabled()
    assert "Base model" in dialog.caption_label.text()

    qtbot.mouseClick(dialog.grid.cell_widget((0, 20, True, 1.0)), Qt.MouseButton.LeftButton)
    assert dialog.selected_step() == 20
    assert dialog.export_button.isEnabled() and dialog.export_button.text() == "Export step 20…"
    assert "Step 20" in dialog.caption_label.text() and PROMPTS[0] in dialog.caption_label.text()
    qtbot.waitUntil(lambda: dialog.preview_label.pixmap() is not None and not dialog.preview_label.pixmap().isNull(),
                    timeout=5_000)
    dialog.prompt_tabs.setCurrentIndex(1)  # the same place in the other prompt's grid stays picked
    assert dialog.selected_cell().prompt == PROMPTS[1] and dialog.selected_step() == 20

    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    export = dialog.export_dialog
    assert isinstance(export, ExportDialog) and export.isVisible()
    assert export.selected_step() == 20  # not the newest (40): the one picked in the grid
    assert export.output_path().name == "my_style-step000020.safetensors"
    with qtbot.waitSignal(dialog.exported, timeout=15_000) as got:
        export.start_export()
    assert got.args[0].step == 20
    export.close()


def test_the_engines_error_is_shown_with_its_hint(qtbot, compared_run, open_dialog):
    dialog = open_dialog(compared_run)
    shutil.rmtree(compared_run / "checkpoints" / "step_000040")  # gone since the dialog opened
    _generate(qtbot, dialog)
    assert dialog.error_frame.isVisible()
    assert "The run has no checkpoint at step 40." in dialog.error_label.text()
    assert dialog.hint_label.text() == "Pick one of the run's checkpoints."
    assert dialog.status_label.text() == "The comparison did not finish."
    assert dialog.generate_button.text() == "Generate" and dialog.generate_button.isEnabled()


def test_a_crash_is_shown_with_the_end_of_the_log(qtbot, compared_run, open_dialog):
    dialog = open_dialog(compared_run, "--crash-after", "3")
    _generate(qtbot, dialog)
    assert dialog.image_count() == 3
    assert "stopped unexpectedly (exit code 3)" in dialog.error_label.text()
    assert "illegal memory access" in dialog.hint_label.text()
    assert dialog.status_label.text() == "The comparison did not finish (3 of 20 images made)."
    again = open_dialog(compared_run)  # what was made before the crash is kept, and said to be unfinished
    assert again.image_count() == 3 and "(it was stopped before the end)" in again.status_label.text()


def test_stop_sends_stop_and_keeps_the_images_made(qtbot, compared_run, open_dialog):
    dialog = open_dialog(compared_run, "--delay", "0.15")
    with qtbot.waitSignal(dialog._process.event, timeout=15_000, check_params_cb=lambda e: isinstance(e, ev.CompareCell)):
        dialog.generate()
    with qtbot.waitSignal(dialog._process.done, timeout=15_000) as done:
        qtbot.mouseClick(dialog.generate_button, Qt.MouseButton.LeftButton)
        assert dialog.generate_button.text() == "Force stop"
        assert dialog.status_label.text().startswith("Stopping")
    assert done.args == [True] and dialog._process.last_finished.status == "stopped"
    made = dialog.image_count()
    assert 1 <= made < 20
    assert dialog.status_label.text() == f"Stopped after {made} of 20 images. The images made are kept."
    pending = [w for w in dialog.grid.cell_widgets() if w.cell is None]
    assert pending and all(w.text() == "not made" for w in pending)


def test_closing_while_running_stops_first(qtbot, compared_run, open_dialog):
    dialog = open_dialog(compared_run, "--delay", "0.15")
    with qtbot.waitSignal(dialog._process.event, timeout=15_000, check_params_cb=lambda e: isinstance(e, ev.CompareCell)):
        dialog.generate()
    with qtbot.waitSignal(dialog.rejected, timeout=15_000):
        dialog.reject()
        assert dialog.isVisible() and dialog.status_label.text().startswith("Stopping")
    assert not dialog.is_running() and dialog._process.last_finished.status == "stopped"


def test_reopening_shows_the_saved_comparison(qtbot, compared_run, open_dialog):
    first = open_dialog(compared_run)
    first.strengths_edit.setText("0.25, 1")
    _generate(qtbot, first)
    first.close()

    again = open_dialog(compared_run)
    assert again.image_count() == 12  # the base model, then 2 checkpoints at 1.0 (0.25 is not in the canned run)
    assert again.grid.row_labels() == ["Base model", "Step 20", "Step 40"]
    assert again.strengths_edit.text() == "1.0"
    assert again.status_label.text().startswith("The comparison of ") and "12 images" in again.status_label.text()
    assert again.open_button.isEnabled()
    qtbot.waitUntil(lambda: again.grid.loaded_count() == 6, timeout=5_000)
    qtbot.mouseClick(again.grid.cell_widget((0, 40, False, 1.0)), Qt.MouseButton.LeftButton)
    assert again.export_button.text() == "Export step 40…"


def test_the_newest_saved_grid_is_read_leniently(tmp_path, run_dir):
    older = run_dir / "compare" / "older"
    newer = run_dir / "compare" / "newer"
    older.mkdir(parents=True)
    newer.mkdir(parents=True)
    (older / "grid.json").write_text(json.dumps({"cells": [
        {"step": 20, "strength": 1.0, "trigger": True, "prompt_index": 0, "prompt": "p", "seed": 1, "file": "a.png"}]}))
    (newer / "grid.json").write_text(json.dumps([
        {"step": 0, "strength": 0, "trigger": True, "prompt_index": 0, "prompt": "p", "seed": 7, "file": "base.png"},
        {"step": 40, "strength": 0.5, "trigger": False, "prompt_index": 1, "file": "b.png"},  # no prompt, seed
        {"step": 40, "strength": 1.0, "trigger": True, "prompt_index": 0, "prompt": "p", "seed": 7},  # no file
        {"step": "40", "strength": 1.0, "trigger": True, "prompt_index": 0, "file": "c.png"},  # step not a number
        {"step": 40, "strength": 1.0, "trigger": True, "prompt_index": 0, "file": "../../escape.png"},
        "not a cell",
    ]))
    os.utime(older / "grid.json", (1_000_000, 1_000_000))
    saved = load_saved_grid(run_dir)
    assert saved.folder == newer
    assert [(c.step, c.strength, c.trigger, c.prompt_index, c.prompt, c.seed) for c in saved.cells] == [
        (0, 0.0, True, 0, "p", 7), (40, 0.5, False, 1, "", 0)]
    assert saved.cells[1].path == str((newer / "b.png").resolve())

    (newer / "grid.json").write_text("{ cut short")  # a broken newest grid: the one before it is shown
    assert load_saved_grid(run_dir).folder == older
    assert load_saved_grid(make_run_dir(tmp_path, "empty")) is None


def test_run_panel_opens_the_comparison_for_the_shown_run(qtbot, runs_dir, compared_run):
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_engine_command(*fake_engine_command("--delay", "0"))
    assert not panel.compare_button.isEnabled()  # no run shown yet
    panel.show_run(make_run_dir(runs_dir, "fresh"))
    assert not panel.compare_button.isEnabled()  # a run without checkpoints
    panel.show_run(compared_run)
    assert panel.compare_button.isEnabled()
    dialog = panel.open_compare_dialog()
    assert isinstance(dialog, CompareDialog) and dialog.run_dir == compared_run and dialog.isVisible()
    with qtbot.waitSignal(dialog._process.done, timeout=15_000):
        dialog.generate()
    assert dialog.image_count() == 20
    dialog.wait_for_images(5_000)
    dialog.close()
    panel.gallery._loader.wait(5_000)


def test_comparing_or_exporting_waits_while_the_project_trains(qtbot, runs_dir, compared_run, open_dialog, tmp_path):
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_engine_command(*fake_engine_command("--delay", "0.05"))
    panel.set_run_source(lambda: RunDir(make_run_dir(runs_dir, "20270101-000000")))
    with qtbot.waitSignal(panel.runner.event, timeout=20_000, check_params_cb=lambda e: isinstance(e, ev.Progress)):
        panel.start()

    dialog = open_dialog(compared_run)  # opened before (a dialog of another window, say): the engine refuses
    dialog.generate()
    assert not dialog.is_running() and dialog.error_frame.isVisibleTo(dialog)
    assert dialog.error_label.text() == ("<b>✖ Training is still running for this project, so a comparison "
                                         "cannot start now.</b>")
    assert dialog.hint_label.text() == "Wait for it to finish, or stop it, then try again."
    assert dialog.generate_button.text() == "Generate" and dialog.strengths_edit.isEnabled()  # ready to try again
    program, prefix = fake_engine_command("--delay", "0")
    export = ExportDialog(compared_run, lora_dirs=[tmp_path / "loras"], program=program, prefix_args=prefix)
    qtbot.addWidget(export)
    export.start_export()
    assert not export.is_running() and export.export_button.isEnabled()
    assert "Training is still running for this project, so an export cannot start now." in export.result_label.text()

    with qtbot.waitSignal(panel.run_finished, timeout=20_000):
        panel.stop()
    with qtbot.waitSignal(export._process.done, timeout=15_000) as done:
        export.start_export()
    assert done.args == [True] and export.result is not None
    panel.gallery._loader.wait(5_000)
