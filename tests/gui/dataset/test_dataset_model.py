from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtTest import QAbstractItemModelTester

from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.gui.dataset.model import DatasetModel
from lora_studio.gui.images import decode_image, thumb_key

from dataset_helpers import make_images


def _model(qtbot, tmp_path, n=5, **kw):
    folder = tmp_path / "images"
    make_images(folder, n, **kw)
    items = scan(DatasetConfig(path=str(folder))).items
    model = DatasetModel(thumb_dir=tmp_path / "cache" / "thumbs")
    model.set_items(items)
    return model, items


def test_model_passes_the_qt_model_tester(qtbot, tmp_path):
    model, items = _model(qtbot, tmp_path, 4)
    QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    model.set_excluded({items[0].rel})
    model.set_caption(items[1].path, "new words")
    model.set_items(items[:2])
    model.set_items([])
    model.shutdown()


def test_roles(qtbot, tmp_path):
    model, items = _model(qtbot, tmp_path, 3)
    idx = model.index(1)
    assert model.rowCount() == 3
    assert idx.data(Qt.ItemDataRole.DisplayRole) == "img001.png"
    assert idx.data(Qt.ItemDataRole.ToolTipRole) == "a picture, colour 1"
    assert idx.data(DatasetModel.CaptionRole) == "a picture, colour 1"
    assert idx.data(DatasetModel.ImageSizeRole) == QSize(96, 64)  # from the header
    assert idx.data(DatasetModel.ExcludedRole) is False
    model.set_excluded({items[1].rel})
    assert idx.data(DatasetModel.ExcludedRole) is True and model.included_count() == 2
    with qtbot.waitSignal(model.dataChanged):
        model.set_caption(items[1].path, "changed")
    assert idx.data(DatasetModel.CaptionRole) == "changed"
    model.shutdown()


def test_thumbnails_arrive_off_thread_and_are_cached_on_disk(qtbot, tmp_path):
    model, items = _model(qtbot, tmp_path, 3)
    placeholder = model.index(0).data(Qt.ItemDataRole.DecorationRole)  # asks for the thumbnail
    assert not model.has_thumbnail(0)  # not decoded on the GUI thread: a placeholder first
    assert placeholder.width() > placeholder.height()  # with the image's own aspect ratio
    qtbot.waitUntil(lambda: model.has_thumbnail(0), timeout=5000)
    thumb = model.index(0).data(Qt.ItemDataRole.DecorationRole)
    assert (thumb.width(), thumb.height()) == (96, 64)  # small images are not blown up
    cached = list((tmp_path / "cache" / "thumbs").glob("*.png"))
    assert [p.stem for p in cached] == [thumb_key(items[0].path)]
    model.shutdown()


def test_thumbnail_cache_key_follows_the_file(tmp_path):
    (p,) = make_images(tmp_path, 1, size=(600, 300))
    key = thumb_key(p)
    img = decode_image(p, 128, tmp_path / "t" / f"{key}.png")
    assert (img.width(), img.height()) == (128, 64)
    assert decode_image(p, 128, tmp_path / "t" / f"{key}.png").size() == img.size()  # from the cache
    p.write_bytes(p.read_bytes() + b"\0")
    assert thumb_key(p) != key


def test_five_hundred_rows_are_cheap(qtbot, tmp_path):
    # The model answers from what the scan read: no decoding when the view asks for text or sizes.
    class Row:
        def __init__(self, i):
            self.path, self.rel = tmp_path / f"{i}.png", f"{i}.png"
            self.caption, self.has_caption, self.caption_path = "x", True, tmp_path / f"{i}.txt"
            self.repeats, self.width, self.height = 1, 512, 768

    model = DatasetModel()
    model.set_items([Row(i) for i in range(500)])
    assert model.rowCount() == 500
    assert all(model.index(r).data(DatasetModel.ImageSizeRole) == QSize(512, 768) for r in range(500))
    assert model.row_of(tmp_path / "250.png") == 250
    model.shutdown()


def test_many_overrides_returning_none_do_not_free_none(qtbot):
    # PySide6 6.12.0 on Python 3.11 loses a reference to None per C++ call into an override returning
    # None and aborts the app (none_dealloc); pyproject.toml excludes it. A grid repainting on hover makes
    # hundreds of thousands of such calls: this guards against a dependency bringing it back.
    import sys

    from PySide6.QtCore import QSortFilterProxyModel

    model = DatasetModel()

    class Row:
        path, rel, caption, has_caption, caption_path, repeats, width, height = Path("/x.png"), "x.png", "", True, Path("/x.txt"), 1, 4, 4

    model.set_items([Row()])
    proxy = QSortFilterProxyModel()
    proxy.setSourceModel(model)
    index = proxy.index(0, 0)
    for _ in range(max(100_000, sys.getrefcount(None) * 2)):
        proxy.data(index, Qt.ItemDataRole.FontRole)  # a role the model does not answer: None
    assert sys.getrefcount(None) > 0
