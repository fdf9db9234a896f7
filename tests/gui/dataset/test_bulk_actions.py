import tomllib

from PySide6.QtGui import QUndoStack

from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.gui.dataset.bulk_actions import BulkActions, BulkActionsBar
from lora_studio.gui.dataset.caption_editor import CaptionWriter
from lora_studio.gui.dataset.model import DatasetModel
from lora_studio.gui.store import ConfigStore

from dataset_helpers import make_project


def _setup(tmp_path, n=4, **kw):
    project = make_project(tmp_path / "p", n, **kw)
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    model = DatasetModel()
    model.set_items(scan(DatasetConfig(path=store.config.dataset.path)).items)
    writer = CaptionWriter()
    writer.written.connect(model.set_caption)
    stack = QUndoStack()
    return project, store, model, stack, BulkActions(stack, writer, store, model.items)


def _captions(project):
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(project.images_dir.glob("*.txt"))}


def test_trigger_word_goes_first_in_every_caption_and_undo_takes_it_back(qtbot, tmp_path):
    project, store, model, stack, bulk = _setup(tmp_path)
    before = {p: p.read_bytes() for p in project.images_dir.glob("*.txt")}
    assert bulk.add_trigger("zzstyle") == 4
    assert all(text.startswith("zzstyle, a picture") for text in _captions(project).values())
    assert all(it.caption.startswith("zzstyle, ") for it in model.items())  # the grid follows
    assert bulk.add_trigger("zzstyle") == 0  # already there: nothing to do, no undo step
    assert stack.count() == 1
    stack.undo()
    assert {p: p.read_bytes() for p in project.images_dir.glob("*.txt")} == before
    stack.redo()
    assert bulk.remove_trigger("zzstyle") == 4
    assert {p: p.read_bytes() for p in project.images_dir.glob("*.txt")} == before


def test_trigger_creates_missing_caption_files_and_undo_removes_them(qtbot, tmp_path):
    project, store, model, stack, bulk = _setup(tmp_path, 2, captions=False)
    bulk.add_trigger("zzstyle")
    assert _captions(project) == {"img000.txt": "zzstyle\n", "img001.txt": "zzstyle\n"}
    stack.undo()
    assert _captions(project) == {}


def test_find_replace(qtbot, tmp_path):
    project, store, model, stack, bulk = _setup(tmp_path, 3)
    messages = []
    bulk.message.connect(messages.append)
    assert bulk.find_replace("picture", "painting") == 3
    assert _captions(project)["img001.txt"] == "a painting, colour 1\n"
    assert bulk.find_replace("nothing like this", "x") == 0
    assert messages[-1] == 'No caption contains "nothing like this".'


def test_exclude_writes_the_project_config_and_leaves_the_file_alone(qtbot, tmp_path):
    project, store, model, stack, bulk = _setup(tmp_path, 3)
    image = project.images_dir / "img001.png"
    data, mtime = image.read_bytes(), image.stat().st_mtime_ns
    assert bulk.set_excluded(["img001.png"], True) == 1
    store.flush()
    assert tomllib.loads(project.config_path.read_text())["dataset"]["exclude"] == ["img001.png"]
    assert image.read_bytes() == data and image.stat().st_mtime_ns == mtime
    assert bulk.set_excluded(["img001.png"], True) == 0
    stack.undo()
    store.flush()
    assert tomllib.loads(project.config_path.read_text())["dataset"]["exclude"] == []
    stack.redo()
    assert bulk.set_excluded(["img001.png"], False) == 1
    assert store.get("dataset.exclude") == []


def test_bar_shares_the_trigger_with_the_settings(qtbot, tmp_path):
    project, store, model, stack, bulk = _setup(tmp_path, 2)
    bar = BulkActionsBar(bulk)
    qtbot.addWidget(bar)
    qtbot.keyClicks(bar.trigger, "zzink")
    assert store.get("output.trigger") == "zzink"
    bar.add_button.click()
    assert _captions(project)["img000.txt"].startswith("zzink, ")
    store.set("output.trigger", "other")
    assert bar.trigger.text() == "other"
