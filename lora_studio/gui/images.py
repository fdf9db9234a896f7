"""Images on screen: one decoder for every thumbnail and preview (the dataset grid, the caption editor,
the samples, the comparison grid), run on the shared pool of gui/tasks.py.

Decoding goes through Pillow with the conversion training uses (upright by EXIF, alpha over white, 16-bit
scaled down), so what the artist sees is what the model is trained on. A decode is never done on the GUI
thread; the newest request is decoded first, because what was asked for last is what is on screen now.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from PIL import Image, ImageOps
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QToolButton

from lora_studio.core.atomic import atomic_write
from lora_studio.core.images import load_rgb, to_rgb
from lora_studio.gui.tasks import IMAGE_PRIORITY_SPAN, run_in_background, wait_for_background

# Later requests get higher priorities (within the span below the shared pool's other tasks).
_priorities = itertools.count()


def next_priority() -> int:
    """A priority for an image decode: above every earlier one, below every non-image task."""
    return next(_priorities) % IMAGE_PRIORITY_SPAN


def thumb_key(path: Path) -> str | None:
    """A cache key for a thumbnail of `path` that changes when the file does (path, mtime, size)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return hashlib.sha1(f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()


def decode_image(path: Path, max_side: int, cache_file: Path | None = None) -> QImage:
    """Runs on a worker thread: `path` fitted into max_side x max_side (never enlarged), as an RGB QImage.

    With `cache_file`, a thumbnail already cached there is read instead, and a fresh one is written there.
    Raises ImageError (with the reason) when the file cannot be read."""
    if cache_file is not None and cache_file.is_file():
        cached = QImage(str(cache_file))
        if not cached.isNull():
            return cached
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_side, max_side))  # JPEG decodes at 1/2, 1/4, 1/8 scale: a big speed-up
            im.load()
            im = to_rgb(ImageOps.exif_transpose(im), path)
    except Exception:
        im = load_rgb(path)  # raises ImageError with the reason
    im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if cache_file is not None:
        try:
            atomic_write(cache_file, lambda tmp: im.save(tmp, format="PNG", compress_level=1))
        except OSError:
            pass  # a read-only project still shows thumbnails, just without the cache
    return QImage(im.tobytes(), im.width, im.height, im.width * 3, QImage.Format.Format_RGB888).copy()


class ImageLoader(QObject):
    """Decodes images off the GUI thread; `loaded(path, max_side, image)` arrives on the GUI thread, with a
    null image when the file is missing or cannot be read."""

    loaded = Signal(str, int, QImage)

    def request(self, path: str, max_side: int) -> None:
        run_in_background(
            lambda: decode_image(Path(path), max_side),
            lambda image: self.loaded.emit(path, max_side, image),
            lambda _error: self.loaded.emit(path, max_side, QImage()),
            owner=self, priority=next_priority(),
        )

    def wait(self, msecs: int = -1) -> bool:
        """Block until every decode asked for so far has run (tests, and before closing)."""
        return wait_for_background(msecs)


def show_thumbnail(button: QToolButton, image: QImage, path: str) -> None:
    """A decoded thumbnail on its button, or 'missing' (saying which file) when it could not be read."""
    if image.isNull():
        button.setIcon(QIcon())
        button.setText("missing")
        button.setToolTip(f"{button.toolTip()}\n\nThe image file is gone: {path}")
    else:
        button.setText("")
        button.setIcon(QIcon(QPixmap.fromImage(image)))
