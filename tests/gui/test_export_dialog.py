"""ExportDialog running the fake engine's `export` subcommand as a real process."""

from __future__ import annotations

import shutil

import pytest
from fake_engine import fake_engine_command, make_run_dir
from PySide6.QtCore import Qt
from ranking_helpers import sentence, write_ranking

from lora_studio.gui.export_dialog import ExportDialog


@pytest.fixture
def lora_dir(tmp_path):
    path = tmp_path / "ComfyUI" / "models" / "loras"
    path.mkdir(parents=True)
    return path


def _dialog(qtbot, run_dir, lora_dir, *options):
    program, prefix = fake_engine_command(*options)
    dialog = ExportDialog(run_dir, lora_dirs=[lora_dir], program=program, prefix_args=prefix)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_defaults_to_the_newest_checkpoint_in_the_uis_lora_folder(qtbot, finished_run, lora_dir):
    dialog = _dialog(qtbot, finished_run, lora_dir)
    combo = dialog.checkpoint_combo
    assert [combo.itemData(i) for i in range(combo.count())] == [40, 20]
    assert combo.itemText(0) == "Step 40 (newest)"
    assert dialog.output_path() == lora_dir / "my_style-step000040.safetensors"
    combo.setCurrentIndex(1)
    assert dialog.output_path() == lora_dir / "my_style-step000020.safetensors"
    dialog.folder_combo.setCurrentIndex(1)  # the run's own folder is always offered
    assert dialog.output_path() == finished_run / "my_style-step000020.safetensors"


def test_the_recommended_checkpoint_is_preselected_with_its_sentence(qtbot, finished_run, lora_dir):
    write_ranking(finished_run, 20)
    dialog = _dialog(qtbot, finished_run, lora_dir)
    combo = dialog.checkpoint_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["Step 40 (newest)", "★ Step 20 (recommended)"]
    assert dialog.selected_step() == 20 and dialog.output_path() == lora_dir / "my_style-step000020.safetensors"
    assert dialog.recommendation_label.isVisible()
    assert dialog.recommendation_label.text() == f"★ Recommended — {sentence(20)}"
    label = dialog.recommendation_label  # wrapped, and every line of it in sight
    qtbot.waitUntil(lambda: label.width() > 0)
    assert label.height() >= label.heightForWidth(label.width()) > label.fontMetrics().height()

    picked = ExportDialog(finished_run, lora_dirs=[lora_dir], step=40)  # the comparison grid's pick wins
    qtbot.addWidget(picked)
    assert picked.selected_step() == 40 and sentence(20) in picked.recommendation_label.text()

    write_ranking(finished_run, 30)  # a step whose checkpoint is gone: nothing to recommend
    gone = _dialog(qtbot, finished_run, lora_dir)
    assert gone.selected_step() == 40 and not gone.recommendation_label.isVisible()
    assert not any("★" in gone.checkpoint_combo.itemText(i) for i in range(gone.checkpoint_combo.count()))


def test_a_verified_export_shows_the_check_and_the_preview(qtbot, finished_run, lora_dir):
    dialog = _dialog(qtbot, finished_run, lora_dir)
    with qtbot.waitSignal(dialog.exported, timeout=15_000) as got:
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
        assert not dialog.export_button.isEnabled() and dialog.busy.isVisible()
    result = got.args[0]
    assert result.verified and result.step == 40
    assert (lora_dir / "my_style-step000040.safetensors").is_file()
    assert "✓" in dialog.result_label.text() and "Verified" in dialog.result_label.text()
    assert dialog.preview_label.isVisible() and not dialog.preview_label.pixmap().isNull()
    assert dialog.open_button.isVisible() and dialog.export_button.isEnabled()
    assert dialog.exists_label.isVisible()  # exporting again would replace the file: say so


def test_the_recommendation_stays_whole_when_the_result_and_preview_appear(qtbot, finished_run, lora_dir):
    write_ranking(finished_run, 20)
    dialog = _dialog(qtbot, finished_run, lora_dir)
    with qtbot.waitSignal(dialog.exported, timeout=15_000):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    label = dialog.recommendation_label  # the dialog grows for the preview instead of squeezing the sentence
    qtbot.waitUntil(lambda: dialog.preview_label.isVisible())
    assert label.height() >= label.heightForWidth(label.width()) > label.fontMetrics().height()


def test_verification_problems_are_listed(qtbot, finished_run, lora_dir):
    dialog = _dialog(qtbot, finished_run, lora_dir, "--problems")
    dialog.checkpoint_combo.setCurrentIndex(1)
    with qtbot.waitSignal(dialog.exported, timeout=15_000) as got:
        dialog.start_export()
    assert not got.args[0].verified and got.args[0].step == 20
    text = dialog.result_label.text()
    assert "found problems" in text and "<li>3 LoRA keys do not match any layer of the base model</li>" in text


def test_an_engine_without_events_flag_is_run_the_old_way(qtbot, finished_run, lora_dir):
    dialog = _dialog(qtbot, finished_run, lora_dir, "--old-cli")
    with qtbot.waitSignal(dialog.exported, timeout=15_000) as got:
        dialog.start_export()
    assert got.args[0].path == str(lora_dir / "my_style-step000040.safetensors")
    assert "did not report a verification" in dialog.result_label.text()
    assert dialog.preview_label.isVisible()  # found next to the file by its conventional name


def test_an_export_error_is_shown_in_plain_words(qtbot, finished_run, lora_dir):
    dialog = _dialog(qtbot, finished_run, lora_dir)
    shutil.rmtree(finished_run / "checkpoints" / "step_000040")  # gone since the dialog opened
    with qtbot.waitSignal(dialog._process.done, timeout=15_000):
        dialog.start_export()
    assert "This run has no checkpoint at step 40." in dialog.result_label.text()
    assert "Pick one of the run's checkpoints." in dialog.result_label.text()
    assert dialog.result is None and dialog.export_button.isEnabled()


def test_a_run_without_checkpoints_cannot_export(qtbot, runs_dir, lora_dir):
    dialog = _dialog(qtbot, make_run_dir(runs_dir, "fresh"), lora_dir)
    assert dialog.checkpoint_combo.count() == 0
    assert not dialog.export_button.isEnabled()
    assert "no checkpoint yet" in dialog.status_label.text()
