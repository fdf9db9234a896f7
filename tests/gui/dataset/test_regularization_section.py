"""The Dataset tab's regularisation pictures: a folder chosen or dropped is used where it is, its pictures
counted and glanced at, repeats and weight edited in place; Remove only forgets the folder; a folder that
is gone is said in the app's words; the Settings tab's budget counts the pictures without reading the
folder again for every edit; the health panel lists the folder's findings."""

from __future__ import annotations

import shutil
import tomllib

from PySide6.QtWidgets import QFileDialog, QLabel

from lora_studio.core import budget as budget_mod
from lora_studio.core.config import key_info
from lora_studio.core.dataset import scan
from lora_studio.gui.dataset import regularization_scan as reg_mod
from lora_studio.gui.dataset.regularization import RegularizationSection
from lora_studio.gui.dataset.regularization_scan import PATH_KEY, REPEATS_KEY, WEIGHT_KEY
from lora_studio.gui.main_window import MainWindow
from lora_studio.gui.settings.panel import SettingsPanel
from lora_studio.gui.store import ConfigStore

from dataset_helpers import drop, isolated_settings, make_images, make_project  # noqa: F401 (fixture)


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _section(qtbot, tmp_path, n_reg=4):
    project = make_project(tmp_path / "p", 3)
    reg = tmp_path / "class pictures"
    make_images(reg, n_reg, prefix="reg")
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    section = RegularizationSection(store)
    qtbot.addWidget(section)
    section.show()
    return project, reg, store, section


def _counted(qtbot, section, n):
    qtbot.waitUntil(lambda: section.message.text().startswith(f"{n} regularisation pictures in "), timeout=5000)


def test_unset_it_says_what_they_are_for_and_choosing_a_folder_sets_it(qtbot, tmp_path, isolated_settings, monkeypatch):
    project, reg, store, section = _section(qtbot, tmp_path)
    assert section.intro.isVisible() and section.intro.text().endswith("Optional.")
    assert "keep the LoRA from changing everything else" in section.intro.text()
    assert not section.remove_button.isVisible() and not section.details.isVisible()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(reg))
    section.choose_button.click()
    assert store.get(PATH_KEY) == str(reg.resolve())
    _counted(qtbot, section, 4)
    assert section.message.text() == f"4 regularisation pictures in {reg.resolve()}"
    assert not section.intro.isVisible() and section.remove_button.isVisible() and section.details.isVisible()
    # A few thumbnails, decoded off the GUI thread; the two spare places stay hidden.
    qtbot.waitUntil(lambda: all(label.pixmap() is not None and not label.pixmap().isNull() for label in section.thumbs[:4]), timeout=5000)
    assert [label.isVisible() for label in section.thumbs] == [True] * 4 + [False] * 2
    assert section.thumbs[0].toolTip() == "reg000.png\na picture, colour 0"
    assert not any((project.images_dir / f"reg{i:03d}.png").exists() for i in range(4))  # nothing was copied


def test_a_dropped_folder_is_used_where_it_is_and_loose_files_are_not_copied(qtbot, tmp_path, isolated_settings):
    project, reg, store, section = _section(qtbot, tmp_path)
    before = _files(project.images_dir)
    drop(section, [reg / "reg000.png", reg / "reg001.png"])
    assert store.get(PATH_KEY) == ""
    assert "Drop the one folder" in section.message.text() and section.message.isVisible()
    drop(section, [reg])
    assert store.get(PATH_KEY) == str(reg.resolve())
    _counted(qtbot, section, 4)
    assert _files(project.images_dir) == before
    # The image folder itself is no regularisation folder.
    drop(section, [project.images_dir])
    assert store.get(PATH_KEY) == str(reg.resolve()) and "That is your image folder" in section.message.text()


def test_repeats_and_weight_edit_the_project_with_the_schema_labels_and_ranges(qtbot, tmp_path, isolated_settings):
    project, reg, store, section = _section(qtbot, tmp_path)
    section.use_folder(reg)
    _counted(qtbot, section, 4)
    labels = {w.text() for w in section.details.findChildren(QLabel)}
    assert {key_info(REPEATS_KEY).label, key_info(WEIGHT_KEY).label} <= labels
    assert (section.repeats.minimum(), section.repeats.maximum()) == (key_info(REPEATS_KEY).min, key_info(REPEATS_KEY).max)
    assert (section.weight.minimum(), section.weight.maximum()) == (key_info(WEIGHT_KEY).min, key_info(WEIGHT_KEY).max)
    section.repeats.setValue(3)
    section.weight.setValue(0.5)
    assert store.get(REPEATS_KEY) == 3 and store.get(WEIGHT_KEY) == 0.5
    with qtbot.waitSignal(store.saved, timeout=2000):
        pass
    saved = tomllib.loads(project.config_path.read_text())["dataset"]["regularization"]
    assert saved == {"path": str(reg.resolve()), "repeats": 3, "loss_weight": 0.5}
    store.set(REPEATS_KEY, 5)  # and the store drives the box
    assert section.repeats.value() == 5


def test_remove_forgets_the_folder_and_leaves_the_pictures(qtbot, tmp_path, isolated_settings):
    project, reg, store, section = _section(qtbot, tmp_path)
    section.use_folder(reg)
    _counted(qtbot, section, 4)
    before = _files(reg)
    section.remove_button.click()
    assert store.get(PATH_KEY) == ""
    assert _files(reg) == before  # every picture and caption still there, unchanged
    assert section.message.text() == f"Training without regularisation pictures now. They are still in {reg.resolve()}."
    assert section.intro.isVisible() and not section.details.isVisible() and not section.remove_button.isVisible()


def test_a_folder_that_is_gone_is_said_in_the_apps_words(qtbot, tmp_path, isolated_settings):
    project, reg, store, section = _section(qtbot, tmp_path)
    section.use_folder(reg)
    _counted(qtbot, section, 4)
    shutil.rmtree(reg)
    section.scan.rescan()
    qtbot.waitUntil(lambda: "does not exist" in section.message.text(), timeout=5000)
    text = section.message.text()
    assert text.startswith(f"The regularisation folder {reg.resolve()} does not exist; point “Regularisation folder” (Dataset tab) at")
    assert "dataset.regularization" not in text
    assert not section.details.isVisible() and not section.show_button.isEnabled() and section.remove_button.isVisible()


def test_the_budget_sentence_counts_the_regularisation_pictures_and_reads_the_folder_once(qtbot, tmp_path, isolated_settings, monkeypatch):
    project, reg, store, section = _section(qtbot, tmp_path, n_reg=5)
    panel = SettingsPanel(store, find_models=False, regularization=section.scan)
    qtbot.addWidget(panel)
    panel.set_dataset(scan(store.config.dataset).items)
    store.set("train.epochs", 2)
    store.set("train.batch_size", 1)
    assert panel.budget.text() == "3 images × 1 repeat × 2 epochs = 6 samples = 6 steps at batch 1."
    scans = []
    real = reg_mod.scan_regularization
    monkeypatch.setattr(reg_mod, "scan_regularization", lambda cfg: scans.append(1) or real(cfg))

    def no_scan(*a, **k):
        raise AssertionError("the budget must use the section's scan, not read the folder itself")

    monkeypatch.setattr(budget_mod, "scan_regularization", no_scan)
    section.use_folder(reg)
    # Each epoch takes as many regularisation samples as it has training samples (kohya's rule).
    qtbot.waitUntil(lambda: "regularisation samples" in panel.budget.text(), timeout=5000)
    assert panel.budget.text() == ("3 images × 1 repeat + 3 regularisation samples = 6 per epoch × 2 epochs = "
                                   "12 samples = 12 steps at batch 1.")
    for rank in (8, 12, 24, 32):  # edits elsewhere do not read the folder again
        store.set("network.rank", rank)
    store.set("train.learning_rate", 2e-4)
    assert scans == [1]
    store.set(REPEATS_KEY, 2)  # its own settings do, once: each picture now comes twice, up to the count
    qtbot.waitUntil(lambda: len(scans) == 2 and not section.scan.scanning, timeout=5000)
    assert panel.budget.text().startswith("3 images × 1 repeat + 4 regularisation samples = 7 per epoch")


def test_the_window_shows_the_section_and_the_health_panel_lists_the_folders_findings(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 3)
    reg = tmp_path / "reg"
    make_images(reg, 2, prefix="reg")
    (reg / "reg001.txt").write_text("zkstyle, a picture\n", encoding="utf-8")
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    project.save_config(store.config.with_changes({PATH_KEY: str(reg), "output.trigger": "zkstyle", "train.resolution": 64}))
    w = MainWindow(find_models=False)
    qtbot.addWidget(w)
    w.show()
    assert w.open_project(project.root)
    assert w.regularization.isVisible()
    _counted(qtbot, w.regularization, 2)
    qtbot.waitUntil(lambda: any(f.kind == "reg_trigger" for f in w.health.reg_findings), timeout=10_000)
    assert w.model.rowCount() == 3  # the grid holds the images only
    assert "regularisation samples" in w.settings_panel.budget_text
    texts = [w.health.list.itemWidget(w.health.list.item(i)).findChildren(QLabel)[1].text() for i in range(w.health.list.count())]
    assert any('The trigger word "zkstyle" is in 1 regularisation caption (reg/reg001.png)' in t for t in texts)
    # Moved away in a file manager, then "Check again": the folder's problem is listed, the images still checked.
    shutil.rmtree(reg)
    w.health.check_button.click()
    qtbot.waitUntil(lambda: any(f.kind == "reg_unusable" for f in w.health.reg_findings), timeout=10_000)
    qtbot.waitUntil(lambda: "does not exist" in w.regularization.message.text(), timeout=5000)
    w.close()


def test_a_regularisation_folder_inside_the_image_folder_leaves_the_findings_at_once(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 3)
    inside = project.images_dir / "class"
    make_images(inside, 2, captions=False, prefix="reg")  # uncaptioned: findings while they count as training images
    w = MainWindow(find_models=False)
    qtbot.addWidget(w)
    w.show()
    assert w.open_project(project.root)

    def missing() -> set[str]:
        return {p.name for f in w.health.findings if f.kind == "missing_caption" for p in [f.path]}

    w.health.check_button.click()
    qtbot.waitUntil(lambda: missing() == {"reg000.png", "reg001.png"}, timeout=10_000)
    # Made the regularisation folder: its pictures are no longer training images, and no "Check again" is needed.
    w.store.set(PATH_KEY, str(inside))
    qtbot.waitUntil(lambda: w.health.check_button.isEnabled() and not missing(), timeout=10_000)
    # Removed again: they are training images once more, and their findings come back.
    w.store.set(PATH_KEY, "")
    qtbot.waitUntil(lambda: missing() == {"reg000.png", "reg001.png"}, timeout=10_000)
    w.close()
