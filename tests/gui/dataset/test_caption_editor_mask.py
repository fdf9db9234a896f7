"""The caption editor's preview shows the training mask (dataset.masked_loss): the ignored part dimmed."""

from PIL import Image
from PySide6.QtGui import QColor, QUndoStack

from lora_studio.core.dataset import scan
from lora_studio.gui.dataset.caption_editor import CaptionEditor, CaptionWriter
from lora_studio.gui.store import ConfigStore

from dataset_helpers import make_images


def _editor(qtbot, tmp_path, masked: bool):
    folder = tmp_path / "images"
    make_images(folder, 2, size=(96, 64))
    (folder / "masks").mkdir()
    m = Image.new("L", (96, 64), 0)
    m.paste(255, (0, 0, 48, 64))  # the left half trains
    m.save(folder / "masks" / "img000.png")
    store = ConfigStore(save_delay_ms=0)
    store.set("dataset.path", str(folder))
    store.set("dataset.masked_loss", masked)
    items = scan(store.config.dataset).items
    editor = CaptionEditor(QUndoStack(), CaptionWriter(), store=store)
    qtbot.addWidget(editor)
    editor.resize(400, 500)
    editor.show()
    return editor, store, items


def _shown(qtbot, editor, item):
    editor.set_item(item)
    qtbot.waitUntil(lambda: not editor._pixmap.isNull(), timeout=5000)
    return editor._pixmap.toImage()


def brightness(img, x_share: float) -> int:
    return QColor(img.pixel(int(img.width() * x_share), img.height() // 2)).value()


def test_the_preview_dims_what_the_mask_leaves_out(qtbot, tmp_path):
    editor, store, items = _editor(qtbot, tmp_path, masked=True)
    img = _shown(qtbot, editor, items[0])
    assert editor.mask_shown == items[0].path.parent / "masks" / "img000.png"
    assert editor.mask_note.isVisible() and "masks/img000.png" in editor.mask_note.text()
    # The picture is one colour: its kept (left) half as it is, the ignored right half dimmed.
    assert brightness(img, 0.25) > 2 * brightness(img, 0.75)
    # An image without a mask is shown as it is, and says nothing about masks.
    plain = _shown(qtbot, editor, items[1])
    assert editor.mask_shown is None and not editor.mask_note.isVisible()
    assert abs(brightness(plain, 0.25) - brightness(plain, 0.75)) < 8
    # Masked loss turned off: the overlay goes at once.
    editor.set_item(items[0])
    qtbot.waitUntil(lambda: editor.mask_shown is not None, timeout=5000)
    store.set("dataset.masked_loss", False)
    qtbot.waitUntil(lambda: not editor._pixmap.isNull() and editor.mask_shown is None, timeout=5000)
    off = editor._pixmap.toImage()
    assert abs(brightness(off, 0.25) - brightness(off, 0.75)) < 8


def test_an_alpha_channel_is_shown_as_the_mask(qtbot, tmp_path):
    editor, store, items = _editor(qtbot, tmp_path, masked=True)
    cut = Image.new("RGBA", (96, 64), (200, 60, 60, 255))
    cut.paste((200, 60, 60, 0), (0, 0, 48, 64))  # the left half transparent: the right half trains
    path = items[0].path.parent / "cutout.png"
    cut.save(path)
    [item] = [it for it in scan(store.config.dataset).items if it.path == path]
    img = _shown(qtbot, editor, item)
    assert editor.mask_shown == path and "its transparency" in editor.mask_note.text()
    # The transparent half, shown over white as it trains, is dimmed; the opaque half is as it is.
    assert brightness(img, 0.25) < 128 and abs(brightness(img, 0.75) - 200) <= 2
