"""The dataset as a Qt list model: one row per image, thumbnails made lazily off the GUI thread.

Rows are ImageItem-like objects (path, rel, caption, has_caption, caption_path, repeats, width, height).
A thumbnail is asked for only when the view paints its row, decoded off the GUI thread (gui/images.py),
and cached on disk under the project's `cache/thumbs/` keyed by path + mtime + size, so reopening a
project of 500 images shows them at once. Until it lands the row shows a placeholder of the image's
own aspect ratio (from the header sizes the scan read), so the grid does not jump. A row whose file cannot
be opened — skipped by the scan (rows.py), or failing to decode although its header read well (a
truncated JPEG) — says so (UnusableRole), and the grid marks it "Can't open".
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap

from lora_studio.core.dataset import is_excluded
from lora_studio.core.images import ImageError
from lora_studio.gui.dataset.rows import cannot_train, unusable_reason
from lora_studio.gui.images import decode_image, next_priority, thumb_key
from lora_studio.gui.tasks import cancel_pending, run_in_background, wait_for_background

THUMB_SIZE = 256  # stored size: crisp at the grid's 96–192 px on a HiDPI screen
Index = QModelIndex | QPersistentModelIndex


def with_changes(item: Any, **changes: Any) -> Any:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.replace(item, **changes)
    out = copy.copy(item)
    for k, v in changes.items():
        setattr(out, k, v)
    return out


class DatasetModel(QAbstractListModel):
    CaptionRole = Qt.ItemDataRole.UserRole + 1
    ExcludedRole = Qt.ItemDataRole.UserRole + 2
    PathRole = Qt.ItemDataRole.UserRole + 3
    HasCaptionRole = Qt.ItemDataRole.UserRole + 4
    ImageSizeRole = Qt.ItemDataRole.UserRole + 5  # QSize from the header, never from decoding
    RelRole = Qt.ItemDataRole.UserRole + 6
    SearchRole = Qt.ItemDataRole.UserRole + 7  # file name + caption, for the filter box
    ThumbnailReadyRole = Qt.ItemDataRole.UserRole + 8
    UnusableRole = Qt.ItemDataRole.UserRole + 9  # why the file cannot train or be shown ("" when it can)

    thumbnail_ready = Signal(int)  # row

    def __init__(self, parent=None, thumb_dir: Path | None = None, thumb_size: int = THUMB_SIZE):
        super().__init__(parent)
        self._items: list[Any] = []
        self._excluded: set[str] = set()
        self._rows_by_path: dict[Path, int] = {}
        self._thumb_dir = thumb_dir
        self._thumb_size = thumb_size
        self._thumbs: dict[Path, QPixmap] = {}
        self._pending: set[Path] = set()
        self._undecodable: dict[Path, str] = {}  # files whose thumbnail failed: the reason
        self._placeholders: dict[tuple[int, int], QPixmap] = {}

    # --- contents --------------------------------------------------------------------------------

    def set_items(self, items: Iterable[Any], excluded: Iterable[str] = ()) -> None:
        self.beginResetModel()
        self._items = list(items)
        self._excluded = set(excluded)
        self._rows_by_path = {Path(it.path): row for row, it in enumerate(self._items)}
        self._thumbs = {p: px for p, px in self._thumbs.items() if p in self._rows_by_path}
        self._undecodable.clear()  # a rescan tries again: the file may have been fixed
        self.endResetModel()

    def set_thumb_dir(self, path: Path | None) -> None:
        self._thumb_dir = path

    def items(self) -> list[Any]:
        return list(self._items)

    def item(self, row: int) -> Any:
        return self._items[row]

    def row_of(self, path: str | Path) -> int:
        return self._rows_by_path.get(Path(path), -1)

    def excluded(self) -> set[str]:
        return set(self._excluded)

    def set_excluded(self, rels: Iterable[str]) -> None:
        new = set(rels)
        changed = new ^ self._excluded
        self._excluded = new
        for row, it in enumerate(self._items):
            if is_excluded(it.rel, changed):
                idx = self.index(row)
                self.dataChanged.emit(idx, idx, [self.ExcludedRole, Qt.ItemDataRole.ForegroundRole])

    def set_caption(self, path: str | Path, caption: str | None) -> None:
        """The in-memory caption after a write (the model never writes files itself)."""
        row = self.row_of(path)
        if row < 0:
            return
        self._items[row] = with_changes(self._items[row], caption=caption or "", has_caption=caption is not None)
        idx = self.index(row)
        self.dataChanged.emit(idx, idx, [self.CaptionRole, self.HasCaptionRole, self.SearchRole, Qt.ItemDataRole.ToolTipRole])

    def included_items(self) -> list[Any]:
        """The rows that train: not excluded, and files the scan could use."""
        return [it for it in self._items if not is_excluded(it.rel, self._excluded) and not unusable_reason(it)]

    def unusable(self, row: int) -> str:
        """Why the row's file cannot be used ("" when it can): the scan's reason, or its failed decode."""
        it = self._items[row]
        return unusable_reason(it) or self._undecodable.get(Path(it.path), "")

    def unusable_count(self) -> int:
        return sum(1 for row in range(len(self._items)) if self.unusable(row))

    def included_count(self) -> int:
        return len(self.included_items())

    # --- Qt model API ----------------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._items)

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        it = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(it.path).name
        if role == Qt.ItemDataRole.DecorationRole:
            return self._thumbnail(it)
        if role == Qt.ItemDataRole.ToolTipRole:
            reason = self.unusable(index.row())
            if reason:
                return f"{cannot_train(reason)}: fix it, or exclude it."
            return it.caption if it.has_caption else "No caption yet — select the image and write one."
        if role == self.UnusableRole:
            return self.unusable(index.row())
        if role == self.CaptionRole:
            return it.caption
        if role == self.ExcludedRole:
            return is_excluded(it.rel, self._excluded)
        if role == self.PathRole:
            return str(it.path)
        if role == self.HasCaptionRole:
            return bool(it.has_caption)
        if role == self.ImageSizeRole:
            return QSize(int(it.width), int(it.height))
        if role == self.RelRole:
            return it.rel
        if role == self.SearchRole:
            return f"{Path(it.path).name} {it.caption}"
        if role == self.ThumbnailReadyRole:
            return Path(it.path) in self._thumbs
        if role == Qt.ItemDataRole.ForegroundRole and is_excluded(it.rel, self._excluded):
            return QColor(128, 128, 128)
        return None

    def roleNames(self) -> dict[int, bytes]:
        names = dict(super().roleNames())
        names.update({self.CaptionRole: b"caption", self.ExcludedRole: b"excluded", self.PathRole: b"path",
                      self.HasCaptionRole: b"hasCaption", self.ImageSizeRole: b"imageSize", self.RelRole: b"rel"})
        return names

    # --- thumbnails ------------------------------------------------------------------------------

    def has_thumbnail(self, row: int) -> bool:
        return Path(self._items[row].path) in self._thumbs

    def _thumbnail(self, it: Any) -> QPixmap:
        path = Path(it.path)
        px = self._thumbs.get(path)
        if px is not None:
            return px
        if path not in self._pending and path not in self._undecodable and not unusable_reason(it):
            self._request(path)
        return self._placeholder(int(it.width), int(it.height))

    def _request(self, path: Path) -> None:
        self._pending.add(path)
        key = thumb_key(path)
        cache = self._thumb_dir / f"{key}.png" if self._thumb_dir is not None and key else None
        size = self._thumb_size
        run_in_background(
            lambda: decode_image(path, size, cache),
            lambda image: self._landed(path, image),
            lambda error: self._failed(path, error),
            owner=self, priority=next_priority(),
        )

    def _landed(self, path: Path, image: QImage) -> None:
        self._pending.discard(path)
        row = self.row_of(path)
        if row < 0 or image.isNull():
            return
        self._thumbs[path] = QPixmap.fromImage(image)
        idx = self.index(row)
        self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole, self.ThumbnailReadyRole])
        self.thumbnail_ready.emit(row)

    def _failed(self, path: Path, error: Exception) -> None:
        # The header read, the pixels did not (a truncated JPEG): the row says so instead of staying grey.
        self._pending.discard(path)
        self._undecodable[path] = error.reason if isinstance(error, ImageError) else "cannot be opened"
        row = self.row_of(path)
        if row >= 0:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [self.UnusableRole, Qt.ItemDataRole.ToolTipRole])

    def _placeholder(self, width: int, height: int) -> QPixmap:
        s = self._thumb_size
        if width <= 0 or height <= 0:
            width = height = 1
        scale = s / max(width, height)
        w, h = max(8, round(width * scale)), max(8, round(height * scale))
        px = self._placeholders.get((w, h))
        if px is None:
            px = QPixmap(w, h)
            px.fill(Qt.GlobalColor.transparent)
            p = QPainter(px)
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(128, 128, 128, 60))
            p.drawRoundedRect(0, 0, w, h, 6, 6)
            p.end()
            self._placeholders[(w, h)] = px
        return px

    def shutdown(self) -> None:
        """Drop queued thumbnail jobs and wait for running ones (before the app or a test ends)."""
        cancel_pending(self)
        wait_for_background(5000)
