"""Sample images by step: one row per step, newest on top, one column per prompt.

Newest on top because the artist is watching for the latest images; one column per prompt because the
question they ask is "how does this prompt change as training goes on", which a column answers at a
glance. Images are decoded (and scaled) off the GUI thread (gui/images.py); a viewer dialog
shows one sample large and walks the same prompt through the steps.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImage, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QDialog, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout, QWidget,
)

from lora_studio.core.events import Sample
from lora_studio.gui.images import ImageLoader, show_thumbnail


THUMB_SIZE = 128
VIEWER_SIZE = 1024


class _Thumb(QToolButton):
    def __init__(self, sample: Sample, size: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.setIconSize(QSize(size, size))
        self.setFixedSize(size + 8, size + 8)
        self.setAutoRaise(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.loaded = False
        self.set_sample(sample)

    def set_sample(self, sample: Sample) -> None:
        self.sample = sample
        self.setToolTip(f"{sample.prompt}\nstep {sample.step:,} · seed {sample.seed}\n(click to enlarge)")

    def set_image(self, image: QImage) -> None:
        self.loaded = True
        show_thumbnail(self, image, self.sample.path)


class _StepRow(QWidget):
    def __init__(self, step: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.step = step
        self.thumbs: list[_Thumb] = []
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(4)
        label = QLabel(f"Step\n{step:,}", self)
        label.setFixedWidth(64)
        label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self._layout.addWidget(label)
        self._layout.addStretch(1)

    def insert(self, thumb: _Thumb) -> None:
        pos = sum(1 for t in self.thumbs if t.sample.index <= thumb.sample.index)
        self.thumbs.insert(pos, thumb)
        self._layout.insertWidget(1 + pos, thumb)


class SampleGallery(QWidget):
    def __init__(self, parent: QWidget | None = None, thumb_size: int = THUMB_SIZE):
        super().__init__(parent)
        self._thumb_size = thumb_size
        self._rows: dict[int, _StepRow] = {}
        self._thumbs: dict[str, _Thumb] = {}  # by image path: a resumed run rewrites the same files
        self._loader = ImageLoader(self)
        self._loader.loaded.connect(self._on_loaded)
        self._viewer: SampleViewer | None = None

        self._content = QWidget()
        self._rows_layout = QVBoxLayout(self._content)
        self._rows_layout.setContentsMargins(4, 4, 4, 4)
        self._rows_layout.setSpacing(6)
        self._empty = QLabel("Sample images appear here as training goes on.", self._content)
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setEnabled(False)
        self._rows_layout.addWidget(self._empty)
        self._rows_layout.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

    # --- public API ---------------------------------------------------------------------------------

    def add_sample(self, event: Sample) -> None:
        existing = self._thumbs.get(event.path)
        if existing is not None and existing.sample.step == event.step:
            existing.set_sample(event)
        else:
            if existing is not None:
                self._remove(existing)
            thumb = _Thumb(event, self._thumb_size)
            thumb.clicked.connect(lambda _=False, t=thumb: self.open_viewer(t.sample))
            self._row(event.step).insert(thumb)
            self._thumbs[event.path] = thumb
        self._empty.hide()
        self._loader.request(event.path, self._pixels(self._thumb_size))

    def clear(self) -> None:
        for row in self._rows.values():
            row.deleteLater()
        self._rows.clear()
        self._thumbs.clear()
        self._empty.show()
        if self._viewer is not None:
            self._viewer.close()

    def samples(self) -> list[Sample]:
        """Every sample shown, oldest step first, then by prompt."""
        return sorted((t.sample for t in self._thumbs.values()), key=lambda s: (s.step, s.index))

    def thumbnail_count(self) -> int:
        return len(self._thumbs)

    def loaded_count(self) -> int:
        return sum(t.loaded for t in self._thumbs.values())

    def open_viewer(self, sample: Sample) -> SampleViewer:
        if self._viewer is None:
            self._viewer = SampleViewer(self)
        self._viewer.show_sample(sample)
        self._viewer.show()
        self._viewer.raise_()
        return self._viewer

    def request_image(self, path: str, max_side: int) -> None:
        self._loader.request(path, self._pixels(max_side))

    # --- internals ----------------------------------------------------------------------------------

    def _pixels(self, logical: int) -> int:
        return round(logical * self.devicePixelRatioF())

    def _row(self, step: int) -> _StepRow:
        row = self._rows.get(step)
        if row is None:
            row = self._rows[step] = _StepRow(step, self._content)
            newer = sum(1 for s in self._rows if s > step)
            self._rows_layout.insertWidget(1 + newer, row)  # after the empty-state label, newest first
        return row

    def _remove(self, thumb: _Thumb) -> None:
        row = self._rows[thumb.sample.step]
        row.thumbs.remove(thumb)
        thumb.deleteLater()
        if not row.thumbs:
            del self._rows[row.step]
            row.deleteLater()

    def _on_loaded(self, path: str, max_side: int, image: QImage) -> None:
        thumb = self._thumbs.get(path)
        if thumb is not None and max_side == self._pixels(self._thumb_size):
            thumb.set_image(image)
        if self._viewer is not None:
            self._viewer.image_loaded(path, max_side, image)


class SampleViewer(QDialog):
    """One sample large; Left / Right walk the same prompt through the steps."""

    def __init__(self, gallery: SampleGallery):
        super().__init__(gallery)
        self._gallery = gallery
        self._sample: Sample | None = None
        self.setWindowTitle("Sample")
        self._pixmap = QPixmap()
        self._image = QLabel("Loading…", self)
        self._image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._image.setMinimumSize(256, 256)
        # Ignored: a label's size hint is its pixmap's, which would stop the dialog from ever shrinking.
        self._image.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self._caption = QLabel(self)
        self._caption.setWordWrap(True)
        self._caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._prev = QPushButton("◀ Earlier step", self, clicked=lambda: self._walk(-1))
        self._next = QPushButton("Later step ▶", self, clicked=lambda: self._walk(+1))
        QShortcut(QKeySequence(Qt.Key.Key_Left), self, activated=lambda: self._walk(-1))
        QShortcut(QKeySequence(Qt.Key.Key_Right), self, activated=lambda: self._walk(+1))
        buttons = QHBoxLayout()
        buttons.addWidget(self._prev)
        buttons.addStretch(1)
        buttons.addWidget(self._next)
        layout = QVBoxLayout(self)
        layout.addWidget(self._image, 1)
        layout.addWidget(self._caption)
        layout.addLayout(buttons)
        self.resize(720, 780)

    def current(self) -> Sample | None:
        return self._sample

    def show_sample(self, sample: Sample) -> None:
        self._sample = sample
        self._pixmap = QPixmap()
        self._image.setPixmap(QPixmap())
        self._image.setText("Loading…")
        prompt = html.escape(sample.prompt, quote=False)
        self._caption.setText(f"<b>Step {sample.step:,}</b> · seed {sample.seed}<br>{prompt}")
        same_prompt = self._same_prompt()
        self._prev.setEnabled(bool(same_prompt) and same_prompt[0].step < sample.step)
        self._next.setEnabled(bool(same_prompt) and same_prompt[-1].step > sample.step)
        self._gallery.request_image(sample.path, VIEWER_SIZE)

    def image_loaded(self, path: str, max_side: int, image: QImage) -> None:
        if self._sample is None or path != self._sample.path or max_side != self._gallery._pixels(VIEWER_SIZE):
            return  # a thumbnail of the same file, or a sample the artist has already moved past
        if image.isNull():
            self._image.setText(f"The image file is gone:\n{path}")
            return
        self._pixmap = QPixmap.fromImage(image)
        self._fit()

    def pixmap_shown(self) -> QPixmap:
        return self._image.pixmap()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        # Scale the decoded image (at most VIEWER_SIZE) to the label; cheap enough to redo on resize.
        if self._pixmap.isNull():
            return
        dpr = self.devicePixelRatioF()
        target = self._image.size() * dpr
        pixmap = self._pixmap.scaled(
            target, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
        pixmap.setDevicePixelRatio(dpr)
        self._image.setPixmap(pixmap)

    def _same_prompt(self) -> list[Sample]:
        assert self._sample is not None
        return [s for s in self._gallery.samples() if s.index == self._sample.index]

    def _walk(self, direction: int) -> None:
        if self._sample is None:
            return
        steps = self._same_prompt()
        candidates = [s for s in steps if (s.step - self._sample.step) * direction > 0]
        if candidates:
            self.show_sample(candidates[0] if direction > 0 else candidates[-1])
