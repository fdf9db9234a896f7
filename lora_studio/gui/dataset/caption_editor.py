"""The caption editor for the selected image, and the undoable caption writes every caption edit uses.

A caption is written to its .txt (atomically) when the artist pauses typing, presses Enter, leaves
the box or picks another image. Each write is a command on the window's QUndoStack that holds the
file's previous bytes, so undo puts back exactly what was on disk (or removes a file the edit created).

With dataset.masked_loss on, the preview shows the image's training mask (core/dataset.find_mask): the part
the mask leaves out of training is dimmed, in proportion for a grey mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PIL import Image
from PySide6.QtGui import QImage, QKeySequence, QPainter, QPixmap, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from lora_studio.core.atomic import atomic_write_bytes
from lora_studio.core.captions import CaptionError, fold_lines, read_caption, write_caption
from lora_studio.core.dataset import find_mask
from lora_studio.core.images import ImageError, load_mask
from lora_studio.core.tokens import MAX_CAPTION_TOKENS, count_tokens
from lora_studio.gui.dataset.model import with_changes
from lora_studio.gui.dataset.rows import cannot_train, unusable_reason
from lora_studio.gui.images import decode_image
from lora_studio.gui.store import ConfigStore
from lora_studio.gui.tasks import run_in_background

TYPING_PAUSE_MS = 800
PREVIEW_SIZE = 768
# What covers the part of a picture its mask leaves out: a dark blue-grey, this opaque where the mask is black.
MASK_TINT = (16, 20, 40)
MASK_DIM = 0.7


def read_bytes(path: Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class CaptionChange:
    image: Path
    caption_path: Path
    old: bytes | None  # the file as it was (None: there was no file)
    new: str | None  # the caption to write (None: remove the file)


class CaptionWriter(QObject):
    """The one place caption files are written from the GUI; tells the grid and the editor what changed."""

    written = Signal(object, object)  # image path, caption now on disk (None when there is no file)

    def write_text(self, image: Path, caption_path: Path, text: str | None) -> None:
        if text is None:
            Path(caption_path).unlink(missing_ok=True)
        else:
            write_caption(caption_path, text)
        self.written.emit(Path(image), read_caption(caption_path))

    def restore(self, image: Path, caption_path: Path, data: bytes | None) -> None:
        if data is None:
            Path(caption_path).unlink(missing_ok=True)
        else:
            atomic_write_bytes(caption_path, data)
        try:
            text = read_caption(caption_path)
        except CaptionError:  # an undo may restore a caption that training cannot read (not UTF-8)
            text = None
        self.written.emit(Path(image), text)


class SetCaptionsCommand(QUndoCommand):
    def __init__(self, writer: CaptionWriter, changes: list[CaptionChange], text: str, *, already_done: bool = False):
        super().__init__(text)
        self.writer, self.changes = writer, changes
        self._skip_first_redo = already_done  # a fix that already wrote the files still wants an undo

    def redo(self) -> None:
        if self._skip_first_redo:
            self._skip_first_redo = False
            for c in self.changes:
                self.writer.written.emit(c.image, read_caption(c.caption_path))
            return
        for c in self.changes:
            self.writer.write_text(c.image, c.caption_path, c.new)

    def undo(self) -> None:
        for c in reversed(self.changes):
            self.writer.restore(c.image, c.caption_path, c.old)


class CaptionEditor(QWidget):
    next_requested = Signal(int)  # +1 / -1: move the selection in the grid

    def __init__(self, undo_stack: QUndoStack, writer: CaptionWriter, parent: QWidget | None = None, *,
                 store: ConfigStore | None = None):
        super().__init__(parent)
        self.undo_stack, self.writer, self.store = undo_stack, writer, store
        self._item: Any = None
        self.mask_shown: Path | None = None  # the mask laid over the preview now (None: none shown)
        self._committed = ""  # the text last written (or loaded), to tell an edit from a refresh
        self._pause = QTimer(self, singleShot=True, interval=TYPING_PAUSE_MS)
        self._pause.timeout.connect(self.commit)

        self.preview = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.preview.setObjectName("preview")
        self.preview.setMinimumSize(160, 160)
        self.preview.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self._pixmap = QPixmap()
        self.title = QLabel()
        self.title.setObjectName("heading")
        self.details = QLabel()
        self.details.setObjectName("muted")
        self.mask_note = QLabel()
        self.mask_note.setObjectName("muted")
        self.mask_note.hide()
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("Describe this image: the subject, then the style words. Tags separated by commas work well.")
        self.text.setUndoRedoEnabled(False)  # the window's undo stack owns undo, so undo also restores the file
        self.text.setTabChangesFocus(True)
        self.text.setMaximumHeight(120)
        self.text.textChanged.connect(self._typed)
        self.text.installEventFilter(self)
        self.tokens = QLabel()
        self.tokens.setObjectName("muted")
        self.state = QLabel()
        self.state.setObjectName("muted")
        for label in (self.title, self.details, self.mask_note, self.state):
            label.setMinimumWidth(10)  # long names and notes are clipped, never widen the window
        self.details.setWordWrap(True)  # why a file cannot train is a sentence to read whole
        self.prev_button = QPushButton("‹ Previous")
        self.next_button = QPushButton("Next ›")
        self.prev_button.setToolTip("Previous image (Ctrl+Up)")
        self.next_button.setToolTip("Next image (Ctrl+Enter or Ctrl+Down)")
        self.prev_button.clicked.connect(lambda: self._step(-1))
        self.next_button.clicked.connect(lambda: self._step(1))

        footer = QHBoxLayout()
        footer.addWidget(self.tokens)
        footer.addWidget(self.state, 1)
        footer.addWidget(self.prev_button)
        footer.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.title)
        layout.addWidget(self.details)
        layout.addWidget(self.mask_note)
        layout.addWidget(self.text)
        layout.addLayout(footer)
        writer.written.connect(self._on_written)
        if store is not None:
            store.changed.connect(self._setting_changed)
        self.set_item(None)

    # --- what is shown ---------------------------------------------------------------------------

    def item(self) -> Any:
        return self._item

    def set_item(self, item: Any) -> None:
        self.commit()
        self._item = item
        enabled = item is not None
        for w in (self.text, self.prev_button, self.next_button):
            w.setEnabled(enabled)
        if item is None:
            self.title.setText("No image selected")
            self.details.setText("Pick an image in the grid to see it large and write its caption.")
            self._set_text("")
            self._pixmap = QPixmap()
            self.preview.setPixmap(QPixmap())
            self.preview.setText("")
            self.state.setText("")
            self._show_mask_note(None)
            return
        path = Path(item.path)
        self.title.setText(path.name)
        folder = str(Path(item.rel).parent)
        where = "" if folder == "." else f" · in {folder}"
        if reason := unusable_reason(item):
            self.details.setText(f"{cannot_train(reason)}{where}.")
        else:
            self.details.setText(f"{item.width}×{item.height} px · {item.repeats}× per epoch{where}")
        self._set_text(item.caption if item.has_caption else "")
        # Short enough for the row it shares with the token count and the buttons; the tooltip says more.
        self.state.setText("" if item.has_caption else "No caption file yet.")
        self.state.setToolTip("" if item.has_caption else f"Typing a caption creates {Path(item.caption_path).name} beside the image.")
        self._load_preview()

    def _masked(self) -> bool:
        return self.store is not None and self.store.config.dataset.masked_loss

    def _setting_changed(self, key: str) -> None:
        if key in ("", "dataset.masked_loss") and self._item is not None:
            self._load_preview()

    def _load_preview(self) -> None:
        path, masked = Path(self._item.path), self._masked()
        self.preview.setText("Loading…")
        self._pixmap = QPixmap()  # not the last image's again on a resize while this one loads
        self.preview.setPixmap(QPixmap())
        self._show_mask_note(None)
        # The preview is decoded on a pool thread; a late result for another image is dropped.
        run_in_background(lambda: preview_with_mask(path, PREVIEW_SIZE, masked), lambda r: self._show_preview(path, *r),
                          lambda _e: self._show_preview(path, QImage(), None), owner=self)

    def _show_preview(self, path: Path, image: QImage, mask: Path | None) -> None:
        if self._item is None or Path(self._item.path) != path:
            return
        self._show_mask_note(mask)
        if image.isNull():
            self.preview.setText("This image cannot be opened. See Dataset health.")
            return
        self._pixmap = QPixmap.fromImage(image)
        self._fit_preview()

    def _show_mask_note(self, mask: Path | None) -> None:
        self.mask_shown = mask
        if mask is None:
            self.mask_note.setText("")
            self.mask_note.setVisible(False)
            return
        where = "its transparency" if self._item is not None and mask == Path(self._item.path) else f"{mask.parent.name}/{mask.name}"
        self.mask_note.setText(f"Mask: {where} · the dimmed part does not train")
        self.mask_note.setVisible(True)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit_preview()

    def _fit_preview(self) -> None:
        if self._pixmap.isNull():
            return
        size = self.preview.size()
        scaled = self._pixmap.scaled(size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        self.preview.setPixmap(scaled)

    def _set_text(self, text: str) -> None:
        self._committed = text
        self.text.blockSignals(True)
        self.text.setPlainText(text)
        self.text.blockSignals(False)
        self._count_tokens()

    # --- editing ---------------------------------------------------------------------------------

    def _typed(self) -> None:
        self._count_tokens()
        self.state.setText("Editing…")
        self._pause.start()

    def _count_tokens(self) -> None:
        text = self.text.toPlainText()
        n = count_tokens(text) if text.strip() else 0
        over = n > MAX_CAPTION_TOKENS
        self.tokens.setText(f"{n} / {MAX_CAPTION_TOKENS} tokens" + (" — the rest is ignored" if over else ""))
        self.tokens.setProperty("warn", over)
        self.tokens.style().unpolish(self.tokens)
        self.tokens.style().polish(self.tokens)

    def commit(self) -> None:
        """Write the caption now if it changed (pause, Enter, focus out, another image, undo, close)."""
        self._pause.stop()
        if self._item is None:
            return
        text = self.text.toPlainText()
        if text == self._committed:
            return
        self._committed = text
        item = self._item
        change = CaptionChange(Path(item.path), Path(item.caption_path), read_bytes(item.caption_path), text)
        self.undo_stack.push(SetCaptionsCommand(self.writer, [change], f"Edit caption of {Path(item.path).name}"))

    def _on_written(self, image: Path, caption: str | None) -> None:
        if self._item is None or Path(self._item.path) != image:
            return
        self._item = _with_caption(self._item, caption)
        self.state.setText("Saved" if caption is not None else "No caption file")
        # Our own write folds lines; leave the artist's text (and cursor) alone unless it really differs.
        if caption is not None and _same(caption, self.text.toPlainText()):
            self._committed = self.text.toPlainText()
            return
        self._set_text(caption or "")

    def _step(self, delta: int) -> None:
        self.commit()
        self.next_requested.emit(delta)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if obj is self.text:
            if event.type() == QEvent.Type.ShortcutOverride and (
                    event.matches(QKeySequence.StandardKey.Undo) or event.matches(QKeySequence.StandardKey.Redo)):
                event.ignore()  # let the window's Undo/Redo (the caption stack) take the key
                return True
            if event.type() == QEvent.Type.KeyPress:
                ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
                if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                    if ctrl:
                        self._step(1)
                    else:
                        self.commit()
                    return True  # captions are one line: Enter saves instead of breaking it
                if ctrl and event.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                    self._step(1 if event.key() == Qt.Key.Key_Down else -1)
                    return True
            if event.type() == QEvent.Type.FocusOut:
                self.commit()
        return super().eventFilter(obj, event)


def _same(a: str, b: str) -> bool:
    return fold_lines(a) == fold_lines(b)


def _with_caption(item: Any, caption: str | None) -> Any:
    return with_changes(item, caption=caption or "", has_caption=caption is not None)


def preview_with_mask(path: Path, max_side: int, masked: bool) -> tuple[QImage, Path | None]:
    """Runs on a worker thread: the preview (decode_image's), and with `masked` the image's mask laid over it
    (the ignored part dimmed towards MASK_TINT) and where the mask came from; a mask that cannot be read is
    not shown (Dataset health names it)."""
    image = decode_image(path, max_side)
    mask_path = find_mask(path) if masked else None
    if mask_path is None:
        return image, None
    try:
        mask = load_mask(mask_path, alpha=mask_path == Path(path))
    except ImageError:
        return image, None
    size = (image.width(), image.height())
    with mask:
        ignored = mask.resize(size, Image.Resampling.BILINEAR).point(lambda v: round((255 - v) * MASK_DIM))
    cover = Image.new("RGBA", size, MASK_TINT + (0,))
    cover.putalpha(ignored)
    data = cover.tobytes()
    overlay = QImage(data, size[0], size[1], 4 * size[0], QImage.Format.Format_RGBA8888).copy()  # copy: data is freed
    out = image.convertToFormat(QImage.Format.Format_RGB32)
    painter = QPainter(out)
    painter.drawImage(0, 0, overlay)
    painter.end()
    return out, mask_path
