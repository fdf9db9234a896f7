"""The grid shows every image file, and says which ones cannot be opened (issue 13, item 7)."""

from PySide6.QtCore import Qt

from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.gui.dataset.model import DatasetModel
from lora_studio.gui.dataset.rows import grid_rows
from lora_studio.gui.dataset.widgets import badge_for

from dataset_helpers import make_images


def _truncated_jpeg(path):
    import random

    from PIL import Image

    rng = random.Random(0)
    img = Image.new("RGB", (256, 256))
    img.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(256 * 256)])
    img.save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not


def test_a_renamed_text_file_is_in_the_grid_and_can_be_excluded_and_included(qtbot, tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 3)
    (folder / "img001b.png").write_text("my shopping list")  # a text file renamed to .png
    cfg = DatasetConfig(path=str(folder))
    result = scan(cfg)
    rows = grid_rows(result, cfg)
    assert [r.rel for r in rows] == ["img000.png", "img001.png", "img001b.png", "img002.png"]  # in its place
    model = DatasetModel()
    model.set_items(rows)
    idx = model.index(2)
    assert "is not an image that can be opened" in idx.data(DatasetModel.UnusableRole)
    assert badge_for(idx)[0] == "Can't open"
    assert idx.data(Qt.ItemDataRole.ToolTipRole).startswith("This file is not an image that can be opened")
    assert len(model.included_items()) == 3  # it never trains (nor counts in the step budget)
    model.set_excluded({"img001b.png"})  # excluded, it is still listed, so Include can bring it back
    assert model.rowCount() == 4 and badge_for(idx)[0] == "Excluded"
    model.shutdown()


def test_a_truncated_jpeg_gets_a_cant_open_badge_not_a_blank_tile(qtbot, tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 1)
    _truncated_jpeg(folder / "cut.jpg")
    cfg = DatasetConfig(path=str(folder))
    model = DatasetModel(thumb_dir=tmp_path / "thumbs")
    model.set_items(grid_rows(scan(cfg), cfg))
    row = model.row_of(folder / "cut.jpg")
    idx = model.index(row)
    assert not idx.data(DatasetModel.UnusableRole)  # its header read: the scan kept it
    idx.data(Qt.ItemDataRole.DecorationRole)  # painting asks for the thumbnail
    qtbot.waitUntil(lambda: bool(idx.data(DatasetModel.UnusableRole)), timeout=5000)
    assert badge_for(idx)[0] == "Can't open"
    assert idx.data(Qt.ItemDataRole.ToolTipRole).startswith("This file is cut short (truncated)")
    model.shutdown()


def test_a_file_that_cannot_be_opened_keeps_its_caption_in_the_editor(qtbot, tmp_path):
    from PySide6.QtGui import QUndoStack

    from lora_studio.gui.dataset.caption_editor import CaptionEditor, CaptionWriter

    folder = tmp_path / "images"
    make_images(folder, 1)
    broken = folder / "cut.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # too short for even its header
    broken.with_suffix(".txt").write_text("zkstyle, a red circle\n", encoding="utf-8")
    cfg = DatasetConfig(path=str(folder))
    row = next(r for r in grid_rows(scan(cfg), cfg) if r.rel == "cut.png")
    editor = CaptionEditor(QUndoStack(), CaptionWriter())
    qtbot.addWidget(editor)
    editor.set_item(row)
    # Its caption is shown as it is (not "No caption file yet"), and the line under its name says why it
    # cannot train instead of "0×0 px · 0× per epoch".
    assert editor.text.toPlainText() == "zkstyle, a red circle" and editor.state.text() == ""
    assert editor.details.text().startswith("This file ") and editor.details.text().endswith(", so it cannot train.")
    assert "0×0" not in editor.details.text()
