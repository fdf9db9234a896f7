import tomllib
from pathlib import Path

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
    store.set("model.base", str(tmp_path / "model.safetensors"))
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
