from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QUndoStack

from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.gui.dataset.bulk_actions import BulkActions
from lora_studio.gui.dataset.caption_editor import CaptionWriter
from lora_studio.gui.dataset.model import DatasetModel
from lora_studio.gui.dataset.view import DROP_CHOICE_KEY, DatasetView
from lora_studio.gui.store import ConfigStore

from dataset_helpers import drop, isolated_settings, make_images, make_project  # noqa: F401 (fixture)


class Harness:
    """A DatasetView wired as the main window wires it, with a synchronous rescan."""

    def __init__(self, qtbot, project):
        self.project = project
        self.store = ConfigStore()
        self.store.load(project)
        self.model = DatasetModel(thumb_dir=project.thumbs_dir)
        self.bulk = BulkActions(QUndoStack(), CaptionWriter(), self.store, self.model.items)
        self.view = DatasetView(self.model, self.store, self.bulk)
        qtbot.addWidget(self.view)
        self.view.set_project(project)
        self.view.dataset_changed.connect(self.rescan)
        self.view.resize(900, 600)
        self.view.show()
        self.rescan()

    def rescan(self):
        cfg = self.store.config.dataset
        try:
            items = scan(DatasetConfig(path=cfg.path)).items
        except Exception:
            items = []
        self.model.set_items(items, cfg.exclude)


def test_empty_project_says_what_to_do(qtbot, tmp_path, isolated_settings):
    h = Harness(qtbot, make_project(tmp_path / "p", 0))
    assert h.view.stack.currentWidget() is h.view.empty
    assert "Drop a folder of images here" in " ".join(w.text() for w in h.view.empty.findChildren(type(h.view.count)))
    h.model.shutdown()


def test_dropping_files_asks_then_copies_them_into_the_project(qtbot, tmp_path, isolated_settings):
    h = Harness(qtbot, make_project(tmp_path / "p", 2))
    outside = make_images(tmp_path / "elsewhere", 3, prefix="new")
    before = {p: p.read_bytes() for p in outside}
    event = drop(h.view, outside)
    assert event.isAccepted()
    assert h.view.drop_bar.isVisible() and "3 images" in h.view.drop_bar.label.text()
    assert not h.view.drop_bar.in_place_button.isEnabled()  # loose files cannot be used in place
    with qtbot.waitSignal(h.view.dataset_changed, timeout=5000):
        h.view.drop_bar.copy_button.click()
    copied = sorted(p.name for p in h.project.images_dir.iterdir())
    assert {"new000.png", "new000.txt", "new002.png"} <= set(copied)
    assert h.model.rowCount() == 5
    assert "Copied 3 images and 3 captions" in h.view.drop_bar.label.text()
    assert {p: p.read_bytes() for p in outside} == before  # the originals are untouched
    # The same drop again copies nothing twice.
    drop(h.view, outside)
    with qtbot.waitSignal(h.view.dataset_changed, timeout=5000):
        h.view.drop_bar.copy_button.click()
    assert "3 were already there" in h.view.drop_bar.label.text() and h.model.rowCount() == 5
    h.model.shutdown()


def test_a_dropped_folder_can_be_used_in_place_and_the_choice_remembered(qtbot, tmp_path, isolated_settings):
    h = Harness(qtbot, make_project(tmp_path / "p", 0))
    art = tmp_path / "MyArt"
    make_images(art, 4)
    drop(h.view, [art])
    assert h.view.drop_bar.in_place_button.isEnabled()
    h.view.drop_bar.remember.setChecked(True)
    with qtbot.waitSignal(h.view.dataset_changed, timeout=5000):
        h.view.drop_bar.in_place_button.click()
    assert Path(h.store.get("dataset.path")) == art.resolve()
    assert "in place" in h.view.drop_bar.label.text() and "Nothing was copied" in h.view.drop_bar.label.text()
    assert h.model.rowCount() == 4 and list(h.project.images_dir.iterdir()) == []
    assert QSettings().value(DROP_CHOICE_KEY) == "in_place"
    # Remembered: the next folder drop is used in place without asking, and the bar says so.
    other = tmp_path / "Other"
    make_images(other, 2)
    with qtbot.waitSignal(h.view.dataset_changed, timeout=5000):
        drop(h.view, [other])
    assert Path(h.store.get("dataset.path")) == other.resolve() and h.model.rowCount() == 2
    assert "Now training on" in h.view.drop_bar.label.text()
    h.model.shutdown()


def test_exclude_button_uses_the_selection(qtbot, tmp_path, isolated_settings):
    h = Harness(qtbot, make_project(tmp_path / "p", 3))
    h.store.changed.connect(lambda k: h.model.set_excluded(h.store.get("dataset.exclude")) if k == "dataset.exclude" else None)
    h.view.list.setCurrentIndex(h.view.proxy.index(1, 0))
    assert h.view.exclude_button.isEnabled() and not h.view.include_button.isEnabled()
    h.view.exclude_button.click()
    assert h.store.get("dataset.exclude") == ["img001.png"]
    assert h.view.include_button.isEnabled()
    assert "1 excluded" in h.view.count.text()
    h.view.filter.setText("img002")
    assert h.view.proxy.rowCount() == 1
    h.model.shutdown()


def test_the_drop_question_counts_the_images_once(qtbot, tmp_path, isolated_settings):
    h = Harness(qtbot, make_project(tmp_path / "p", 0))
    art = make_images(tmp_path / "art", 3)
    drop(h.view, art[:2])
    assert h.view.drop_bar.label.text() == "Add 2 images?"  # not "Add 2 images (2 images)?"
    drop(h.view, [tmp_path / "art"])
    assert h.view.drop_bar.label.text() == 'Add the folder "art" (3 images)?'
    h.model.shutdown()


def test_the_header_counts_what_the_filter_shows(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 0)
    make_images(project.images_dir, 4, prefix="cat")
    make_images(project.images_dir, 3, prefix="dog")
    h = Harness(qtbot, project)
    assert h.view.count.text() == "7 images"
    h.view.filter.setText("dog")
    assert h.view.count.text() == "3 of 7 images shown"
    h.view.filter.clear()
    assert h.view.count.text() == "7 images"
    h.model.shutdown()


def test_including_an_image_says_its_name_as_it_is_spelled(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 0)
    make_images(project.images_dir, 1, prefix="geopop_")
    h = Harness(qtbot, project)
    said = []
    h.bulk.message.connect(said.append)
    h.bulk.set_excluded(["geopop_000.png"], True)
    h.bulk.set_excluded(["geopop_000.png"], False)
    assert said[-1] == "Included geopop_000.png in training again."
    h.model.shutdown()


def test_add_images_opens_where_images_were_last_added_not_in_the_last_run(qtbot, tmp_path, isolated_settings, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    project = make_project(tmp_path / "p", 0)
    art = make_images(tmp_path / "art", 2)
    asked = []

    def fake_open(parent, caption, folder, filters):
        asked.append(folder)
        return [str(art[0])], filters

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", staticmethod(fake_open))
    h = Harness(qtbot, project)
    h.view.browse_files()
    assert asked[0] and Path(asked[0]) != project.runs_dir  # never "" (Qt's last folder of any dialog)
    h.view.drop_bar.hide()
    h.view.browse_files()
    assert Path(asked[1]) == tmp_path / "art"
    h.model.shutdown()
