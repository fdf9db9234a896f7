"""The grid's pieces: the thumbnail delegate and the bar that asks where dropped images go.

The delegate paints from the model's roles only (thumbnail, name, excluded, has-caption): painting
never touches a file, so scrolling 500 images stays smooth.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QCheckBox, QFrame, QHBoxLayout, QLabel, QPushButton, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget,
)

from lora_studio.gui.dataset.model import DatasetModel
from lora_studio.gui.settings.places import say

TEXT_HEIGHT = 20


def badge_for(index: QModelIndex) -> tuple[str, QColor] | None:
    """The mark a grid cell carries, most important first: left out, cannot be opened, no caption."""
    if index.data(DatasetModel.ExcludedRole):
        return "Excluded", QColor(90, 90, 90, 230)
    reason = index.data(DatasetModel.UnusableRole)
    if reason:
        return ("Bad caption" if reason.startswith("its caption") else "Can't open"), QColor(190, 40, 40, 235)
    if not index.data(DatasetModel.HasCaptionRole):
        return "No caption", QColor(200, 120, 20, 230)
    return None


class ThumbDelegate(QStyledItemDelegate):
    """A thumbnail fitted into its cell, the file name under it, and a badge (badge_for)."""

    def __init__(self, parent=None, icon: int = 144):
        super().__init__(parent)
        self.icon = icon

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:  # noqa: N802
        return QSize(self.icon + 12, self.icon + TEXT_HEIGHT + 12)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        r = option.rect.adjusted(3, 3, -3, -3)
        pal = option.palette
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(pal.color(QPalette.ColorRole.Highlight))
            painter.drawRoundedRect(r, 8, 8)
        elif option.state & QStyle.StateFlag.State_MouseOver:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(pal.color(QPalette.ColorRole.Midlight))
            painter.drawRoundedRect(r, 8, 8)
        box = QRect(r.x() + 3, r.y() + 3, r.width() - 6, r.height() - TEXT_HEIGHT - 6)
        excluded = bool(index.data(DatasetModel.ExcludedRole))
        px = index.data(Qt.ItemDataRole.DecorationRole)
        if px is not None and not px.isNull():
            size = px.size().scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, size.width(), size.height())
            target.moveCenter(box.center())
            painter.setOpacity(0.3 if excluded else 1.0)
            painter.drawPixmap(target, px)
            painter.setOpacity(1.0)
        text_rect = QRect(r.x() + 4, r.bottom() - TEXT_HEIGHT, r.width() - 8, TEXT_HEIGHT)
        name = option.fontMetrics.elidedText(index.data(Qt.ItemDataRole.DisplayRole) or "", Qt.TextElideMode.ElideMiddle, text_rect.width())
        selected = option.state & QStyle.StateFlag.State_Selected
        painter.setPen(pal.color(QPalette.ColorRole.HighlightedText if selected else (QPalette.ColorRole.PlaceholderText if excluded else QPalette.ColorRole.Text)))
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, name)
        badge = badge_for(index)
        if badge:
            self._badge(painter, box, *badge)
        painter.restore()

    def _badge(self, painter: QPainter, box: QRect, text: str, colour: QColor) -> None:
        fm = painter.fontMetrics()
        w, h = fm.horizontalAdvance(text) + 12, fm.height() + 4
        rect = QRect(box.x() + 4, box.y() + 4, w, h)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawRoundedRect(rect, h / 2, h / 2)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)


class DropBar(QFrame):
    """The question after a drop (copy or use in place), then the answer: what actually happened."""

    chosen = Signal(str, bool)  # "copy" | "in_place", remember

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("dropBar")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.copy_button = QPushButton("Copy into project")
        self.copy_button.setToolTip("Copies the images (and their .txt captions) into this project's images folder")
        self.in_place_button = QPushButton("Use folder in place")
        self.in_place_button.setToolTip("Trains on the folder where it is; nothing is copied")
        self.remember = QCheckBox("Remember")
        self.remember.setToolTip("Do the same next time without asking (change it under Edit → Preferences for drops)")
        self.close_button = QPushButton("Dismiss")
        self.close_button.setObjectName("flat")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(self.label, 1)
        for w in (self.copy_button, self.in_place_button, self.remember, self.close_button):
            layout.addWidget(w)
        self.copy_button.clicked.connect(lambda: self.chosen.emit("copy", self.remember.isChecked()))
        self.in_place_button.clicked.connect(lambda: self.chosen.emit("in_place", self.remember.isChecked()))
        self.close_button.clicked.connect(self.hide)
        self.hide()

    def ask(self, text: str, *, can_copy: bool, can_use_in_place: bool, in_place_note: str = "") -> None:
        self.setProperty("kind", "question")
        self.label.setText(text)
        self.copy_button.setVisible(True)
        self.copy_button.setEnabled(can_copy)
        self.in_place_button.setVisible(True)
        self.in_place_button.setEnabled(can_use_in_place)
        self.in_place_button.setToolTip(in_place_note or "Trains on the folder where it is; nothing is copied")
        self.remember.setVisible(True)
        self.close_button.setText("Cancel")
        self._restyle()
        self.show()

    def tell(self, text: str) -> None:
        self.setProperty("kind", "info")
        self.label.setText(say(text))  # a scan error names settings by key; the bar says their labels
        for w in (self.copy_button, self.in_place_button, self.remember):
            w.setVisible(False)
        self.close_button.setText("Dismiss")
        self._restyle()
        self.show()

    def _restyle(self) -> None:
        self.style().unpolish(self)
        self.style().polish(self)
