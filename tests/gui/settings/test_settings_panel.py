import tomllib
from pathlib import Path

from PySide6.QtCore import Qt

from lora_studio.core import budget
from lora_studio.core.dataset import scan
from lora_studio.gui.settings.panel import SettingsPanel
from lora_studio.gui.store import ConfigStore

from dataset_helpers import isolated_settings, make_images, make_project  # noqa: F401 (fixture)


class Item:
    def __init__(self, repeats=1):
        self.repeats = repeats  # no size: the budget counts it as one shape


def _panel(qtbot, tmp_path, **kw):
    project = make_project(tmp_path / "p", 0)
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    panel = SettingsPanel(store, **kw)
    qtbot.addWidget(panel)
    return project, store, panel


def test_edits_save_the_project_file(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel.rank.setValue(32)
    panel.batch_size.setValue(4)
    panel.trigger.setText("zzink")
    panel.trigger.textEdited.emit("zzink")
    panel.prompts.setPlainText("zzink, a cat\n\nzzink, a boat\n")
    with qtbot.waitSignal(store.saved, timeout=2000):
        pass
    data = tomllib.loads(project.config_path.read_text())
    assert data["network"]["rank"] == 32 and data["train"]["batch_size"] == 4
    assert data["output"]["trigger"] == "zzink"
    assert data["sample"]["prompts"] == ["zzink, a cat", "zzink, a boat"]
    store.set("network.rank", 8)  # and the other way: the store drives the widget
    assert panel.rank.value() == 8


def test_problems_show_beside_the_field(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel.show()
    label = panel.findChild(type(panel.budget), "problem")
    problems = [w for w in panel.findChildren(type(panel.budget)) if w.objectName() == "problem" and w.isVisible()]
    assert any("This is empty; set it to a diffusers model folder" in w.text() for w in problems)
    store.set("model.base", str(tmp_path / "model.safetensors"))  # not there: said at once
    problems = [w.text() for w in panel.findChildren(type(panel.budget)) if w.objectName() == "problem" and w.isVisible()]
    # Under the picker the file is named plainly, with no blank line (the empty model note) above it.
    assert "model.safetensors is not there any more; it was moved or deleted: pick it again." in problems
    assert not panel.models_note.isVisible()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_index.json").write_text("{}")
    store.set("model.base", str(tmp_path / "model"))
    problems = [w for w in panel.findChildren(type(panel.budget)) if w.objectName() == "problem" and w.isVisible()]
    assert problems == [] and label is not None
    store.set("train.resolution", 500)
    problems = [w.text() for w in panel.findChildren(type(panel.budget)) if w.objectName() == "problem" and w.isVisible()]
    assert any("multiple of 8" in t for t in problems)


def test_learning_rate_reads_like_a_learning_rate(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    assert panel.learning_rate.text() == "1e-4"
    panel.learning_rate.stepBy(1)
    assert store.get("train.learning_rate") == 2e-4


def test_budget_line_and_epochs_mode(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    assert "Add images" in panel.budget.text()
    panel.set_dataset([Item(), Item(), Item(), Item(10)])
    store.set("train.max_steps", 20)
    store.set("train.batch_size", 1)
    assert panel.budget.text() == "20 steps at batch 1 = 20 samples ≈ 1.5 epochs of 4 images (× 1–10 repeats, 13 per epoch)."
    panel.epochs_radio.setChecked(True)
    panel.epochs.setValue(5)
    assert store.get("train.epochs") == 5 and store.get("train.max_steps") == 20  # the engine works the steps out
    assert panel.budget.text() == "4 images (× 1–10 repeats) = 13 per epoch × 5 epochs = 65 samples = 65 steps at batch 1."
    store.set("train.batch_size", 2)  # epochs stay what the artist chose
    assert store.get("train.epochs") == 5 and not panel.steps.isEnabled()
    assert panel.budget.text().endswith("= 35 steps at batch 2 (7 batches per epoch, the last one short).")
    panel.steps_radio.setChecked(True)  # back to steps: the same length, now fixed
    assert (store.get("train.epochs"), store.get("train.max_steps")) == (0, 35) and not panel.epochs.isEnabled()


def test_epochs_mode_counts_the_batches_as_the_engine_cuts_them(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    make_images(project.images_dir, 3, size=(96, 96), prefix="square")
    make_images(project.images_dir, 3, size=(128, 64), prefix="wide")  # a second bucket
    items = scan(store.config.dataset).items
    panel.set_dataset(items)
    store.set("train.batch_size", 2)
    panel.epochs_radio.setChecked(True)
    panel.epochs.setValue(5)
    with qtbot.waitSignal(store.saved, timeout=2000):
        pass
    assert tomllib.loads(project.config_path.read_text())["train"]["epochs"] == 5
    # Each shape's 3 images make a batch of 2 and a short one: 4 batches per epoch, not ceil(6 / 2) = 3.
    assert panel.budget.text() == (
        "6 images × 1 repeat × 5 epochs = 30 samples = 20 steps at batch 2 "
        "(4 batches per epoch: 2 image shapes, each batched on its own)."
    )
    # The engine's max_steps for train.epochs is this same budget (tests/engine/training/test_epochs.py holds
    # it to BatchPlan's cut).
    assert budget.budget_for(store.config, items).steps == 20
    # A project saved in epochs opens in epochs mode.
    store.load(project)
    assert panel.epochs_radio.isChecked() and panel.epochs.value() == 5 and not panel.steps.isEnabled()


def test_preset_apply_keeps_model_and_trigger(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    store.set("output.trigger", "zzink")
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("style-sdxl"))
    panel.preset_apply.click()
    assert store.get("train.resolution") == 1024 and store.get("output.trigger") == "zzink"
    assert panel.resolution.currentText() == "1024"
    assert "In use." in panel.preset_note.text()


def test_models_found_on_this_computer_are_offered(qtbot, tmp_path, isolated_settings):
    ckpt = tmp_path / "home" / "ComfyUI" / "models" / "checkpoints" / "dreamy.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    project, store, panel = _panel(qtbot, tmp_path)
    qtbot.waitUntil(lambda: panel.model_combo.findData(str(ckpt)) >= 0, timeout=5000)
    assert "Found 1 model" in panel.models_note.text()
    panel.model_combo.setCurrentIndex(panel.model_combo.findData(str(ckpt)))
    assert Path(store.get("model.base")) == ckpt


def test_advanced_section_is_built_on_demand(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    assert panel.advanced_widgets == {}
    panel.advanced_toggle.setChecked(True)
    w = panel.advanced_widgets["train.lr_scheduler"]
    assert w.currentText() == "cosine"
    w.setCurrentIndex(w.findData("linear"))
    assert store.get("train.lr_scheduler") == "linear"
    panel.advanced_widgets["dataset.flip"].setChecked(True)
    assert store.get("dataset.flip") is True


def test_picking_a_damaged_model_says_so_at_once(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel.show()
    model = tmp_path / "sd15.safetensors"
    header = b'{"model.diffusion_model.conv_in.weight": {"dtype": "F16", "shape": [320, 4, 3, 3], "data_offsets": [0, 23040]}}'
    model.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 1000)  # a download cut short
    store.set("model.base", str(model))
    qtbot.waitUntil(lambda: bool(store.problems))
    shown = [w.text() for w in panel.findChildren(type(panel.budget)) if w.objectName() == "problem" and w.isVisible()]
    assert any(t.startswith("This is damaged and cannot be read (sd15.safetensors: it is 22,040 bytes shorter than its header says")
               and t.endswith("download the model again.") for t in shown), shown


def _other_value(value, choices):
    if isinstance(value, bool):
        return not value
    if choices:
        return next(c for c in choices if c != value)
    if isinstance(value, (int, float)):
        return value * 2 + 1
    return value + "x"


def test_the_preset_note_is_right_after_an_edit_of_any_key_the_preset_sets(qtbot, tmp_path, isolated_settings):
    from lora_studio.core.config import key_info
    from lora_studio.core.presets import get_preset, list_presets

    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    for name in list_presets():
        panel.preset_combo.setCurrentIndex(panel.preset_combo.findData(name))
        panel.preset_apply.click()
        assert "In use." in panel.preset_note.text(), name
        for key, value in get_preset(name).values.items():
            store.set(key, _other_value(value, key_info(key).choices))
            assert "In use." not in panel.preset_note.text(), (name, key)
            assert panel.preset_combo.currentIndex() == -1  # the box names no preset that is not applied
            store.set(key, value)
            assert "In use." in panel.preset_note.text(), (name, key)
            assert panel.preset_combo.currentData() == name


def test_the_preset_box_shows_custom_settings_when_no_preset_matches(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    assert panel.preset_combo.currentData() == "style-sd15" and "In use." in panel.preset_note.text()
    store.set("network.rank", 48)
    assert panel.preset_combo.currentIndex() == -1 and panel.preset_combo.currentText() == ""
    assert panel.preset_combo.placeholderText().startswith("Custom settings")
    assert "match no preset" in panel.preset_note.text() and not panel.preset_apply.isEnabled()
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("style-sdxl"))  # looking, not applying
    assert "Not applied" in panel.preset_note.text() and panel.preset_apply.isEnabled()
    store.load(project)  # reopened: a project with its own settings opens as custom, not as a preset
    assert panel.preset_combo.currentIndex() == -1


def test_the_form_takes_labels_help_and_ranges_from_the_schema(qtbot, tmp_path, isolated_settings):
    from PySide6.QtWidgets import QFormLayout, QLabel

    from lora_studio.core.config import key_info
    from lora_studio.gui.settings.places import ADVANCED

    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel.advanced_toggle.setChecked(True)
    labels = {w.text() for form in panel.findChildren(QFormLayout) for w in form.parentWidget().findChildren(QLabel)}
    for _, keys in ADVANCED:
        for key in keys:
            info = key_info(key)
            assert info.label in labels, key
            widget = panel.advanced_widgets[key]
            assert widget.toolTip() == info.help, key
            if hasattr(widget, "minimum") and info.min is not None:
                assert widget.minimum() == round(info.min, getattr(widget, "decimals", lambda: 0)()), key
                assert widget.maximum() == min(info.max, 2**31 - 1), key
    assert panel.rank.maximum() == key_info("network.rank").max and panel.rank.toolTip() == key_info("network.rank").help
    assert panel.steps.maximum() == key_info("train.max_steps").max


def test_fields_stay_put_while_the_budget_line_grows(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel.resize(700, 900)
    panel.show()
    qtbot.waitExposed(panel)

    def rank_y():
        return panel.rank.mapTo(panel, panel.rank.rect().topLeft()).y()

    qtbot.wait(10)
    before, one_line = rank_y(), panel.budget.text()  # "Add images in the Dataset tab ...": one line
    panel.set_dataset([Item(), Item(), Item(), Item(10)])
    store.set("train.max_steps", 1_234_567)  # a long sentence: two lines at this width
    assert panel.budget.text() != one_line and panel.budget.heightForWidth(panel.budget.width()) > \
        panel.budget.fontMetrics().lineSpacing() * 1.5
    qtbot.wait(10)
    assert rank_y() == before


def test_the_budget_line_names_fields_by_their_labels(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel.set_dataset([Item()])
    store.set("train.resolution", 128)  # the automatic smallest bucket side follows: it trains
    assert "steps at batch" in panel.budget.text()
    store.set("dataset.min_bucket_side", 256)
    assert "“Smallest bucket side” (Advanced settings)" in panel.budget.text()
    assert "dataset.min_bucket_side" not in panel.budget.text()


def test_the_model_dialog_opens_beside_the_model_not_in_the_last_run(qtbot, tmp_path, isolated_settings, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    models = tmp_path / "models"
    models.mkdir()
    (models / "a.safetensors").write_bytes(b"x")
    asked = []

    def fake_open(parent, caption, folder, filters):
        asked.append(folder)
        return str(models / "a.safetensors"), filters

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(fake_open))
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel._browse_file()
    assert asked[0] and Path(asked[0]) != project.runs_dir
    assert store.get("model.base") == str(models / "a.safetensors")
    store.set("model.base", "")
    panel._browse_file()  # no model now: where the last one was chosen
    assert Path(asked[1]) == models


def test_schedule_options_show_only_with_their_schedule_and_each_optimizer_says_what_it_is(qtbot, tmp_path, isolated_settings):
    from lora_studio.core.config import key_info
    from lora_studio.gui.settings.fields import ChoiceHelp

    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel.show()
    panel.advanced_toggle.setChecked(True)
    w = panel.advanced_widgets
    cycles, power = w["train.lr_cycles"], w["train.lr_power"]
    assert store.get("train.lr_scheduler") == "cosine"
    assert not cycles.isVisible() and not power.isVisible()
    w["train.lr_scheduler"].setCurrentIndex(w["train.lr_scheduler"].findData("cosine_with_restarts"))
    assert cycles.isVisible() and not power.isVisible()
    cycles.setValue(3)
    assert store.get("train.lr_cycles") == 3
    store.set("train.lr_scheduler", "polynomial")
    assert power.isVisible() and not cycles.isVisible()
    store.set("train.lr_scheduler", "linear")
    assert not cycles.isVisible() and not power.isVisible()
    assert store.get("train.lr_cycles") == 3  # hidden, not forgotten

    combo = w["train.optimizer"]
    helps = {combo.itemData(i): combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(combo.count())}
    assert helps == key_info("train.optimizer").choice_help and len(helps) == 8
    line = next(h for h in panel.findChildren(ChoiceHelp) if h._key == "train.optimizer")
    assert line.text() == helps["adamw"]
    combo.setCurrentIndex(combo.findData("prodigy"))
    assert store.get("train.optimizer") == "prodigy"
    assert line.text() == "Prodigy finds the learning rate itself — leave the learning rate at 1."


def test_switching_the_optimizer_keeps_only_the_arguments_the_new_one_takes(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    store.set("train.optimizer", "prodigy")
    store.set("train.optimizer_args", {"d_coef": 0.8, "betas": [0.9, 0.99]})
    store.set("train.optimizer", "lion")  # lion takes betas, not d_coef
    assert store.get("train.optimizer_args") == {"betas": [0.9, 0.99]}
    assert not store.problems_for("train.optimizer_args")  # Start is not blocked by an argument the app cannot edit


def test_network_options_show_only_with_the_type_that_uses_them(qtbot, tmp_path, isolated_settings):
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    panel.show()
    panel.advanced_toggle.setChecked(True)
    w = panel.advanced_widgets
    conv, factor, full, dora = w["network.conv_rank"], w["network.factor"], w["network.full_matrix"], w["network.dora"]
    assert store.get("network.type") == "lora"
    assert dora.isVisible() and not conv.isVisible() and not factor.isVisible() and not full.isVisible()
    w["network.type"].setCurrentIndex(w["network.type"].findData("locon"))
    assert store.get("network.type") == "locon"
    assert conv.isVisible() and w["network.conv_alpha"].isVisible() and dora.isVisible() and not factor.isVisible()
    store.set("network.type", "lokr")
    assert conv.isVisible() and factor.isVisible() and full.isVisible() and not dora.isVisible()
    store.set("network.type", "loha")
    assert conv.isVisible() and not factor.isVisible() and not dora.isVisible()


def test_the_chosen_models_prediction_is_said_before_a_run(qtbot, tmp_path, isolated_settings):
    import json
    import struct

    # A header-only NoobAI-style SDXL file: the v_pred and ztsnr markers are all the note reads.
    names = ["conditioner.embedders.1.model.ln_final.weight", "v_pred", "ztsnr"]
    blob = json.dumps({n: {"dtype": "F16", "shape": [0], "data_offsets": [0, 0]} for n in names}).encode()
    noob = tmp_path / "noob-vpred.safetensors"
    noob.write_bytes(struct.pack("<Q", len(blob)) + blob)
    project, store, panel = _panel(qtbot, tmp_path, find_models=False)
    store.set("model.base", "")
    assert panel.models_note.text() == "Looking for models on this computer…"
    store.set("model.base", str(noob))
    assert panel.models_note.text() == (
        "Trains with v-prediction with zero terminal SNR, read from the file's v_pred and ztsnr keys.")
    store.set("model.prediction", "epsilon")  # the artist's override is named by its label, not its key
    text = panel.models_note.text()
    assert text.startswith("Trains with epsilon prediction (from “") and "model.prediction" not in text
    assert "note the file carries a v_pred marker" in text, text
    # With a model chosen, the search's "No models found" no longer stands under it.
    panel.models_note.found(0)
    assert text == panel.models_note.text()
