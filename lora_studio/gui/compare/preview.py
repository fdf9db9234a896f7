"""The comparison dialog's right pane: the picked image large, what it is (checkpoint, strength, trigger,
seed, prompt), and Export for its checkpoint."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from lora_studio.core import events as ev
from lora_studio.gui.compare.grid import PREVIEW_SIZE, format_strength, group_title, is_base
from lora_studio.gui.images import ImageLoader


class ComparePreviewPane(QWidget):
    def __init__(self, trigger_word: str, loader: ImageLoader, parent: QWidget | None = None):
        super().__init__(parent)
        self._trigger_word = trigger_word
        self._loader = loader
        self._loader.loaded.connect(self._on_image)
        self._cell: ev.CompareCell | None = None
        self._pixmap = QPixmap()

        self.preview_label = QLabel("Click an image to see it larger.", self)
        self.preview_label.setObjectName("preview")
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setMinimumSize(300, 300)
        # Ignored: a label's size hint is its pixmap's, which would stop the splitter from ever shrinking it.
        self.preview_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.caption_label = QLabel(self)
        self.caption_label.setWordWrap(True)
        self.caption_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.export_button = QPushButton("Export…", self)
        self.export_button.setEnabled(False)
        self.export_button.setToolTip("Pick an image of a checkpoint first")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.preview_label, 1)
        layout.addWidget(self.caption_label)
        layout.addWidget(self.export_button, 0, Qt.AlignmentFlag.AlignRight)

    def show_cell(self, cell: ev.CompareCell | None, picked: bool) -> None:
        """The picked image (decoded off the GUI thread); `picked` without a cell: a place not made."""
        self._cell = cell
        self._pixmap = QPixmap()
        self.preview_label.setPixmap(QPixmap())
        if cell is None:
            self.preview_label.setText("Not made." if picked else "Click an image to see it larger.")
            self.caption_label.clear()
            return
        self.preview_label.setText("Loading…")
        what = ("<b>Base model</b> (no LoRA)" if is_base(cell) else
                f"<b>Step {cell.step:,}</b> · strength {format_strength(cell.strength)}")
        trigger = group_title(cell.trigger, self._trigger_word).lower() if self._trigger_word else ""
        trigger = " · " + html.escape(trigger, quote=False) if trigger else ""
        self.caption_label.setText(f"{what}{trigger} · seed {cell.seed}<br>{html.escape(cell.prompt, quote=False)}")
        self._loader.request(cell.path, self._preview_pixels())

    def show_export(self, step: int | None, picked: bool, running: bool) -> None:
        """Export is for a checkpoint's image, once the engine is free again."""
        self.export_button.setText(f"Export step {step:,}…" if step else "Export…")
        self.export_button.setEnabled(step is not None and not running)
        self.export_button.setToolTip(
            "Wait for the comparison to finish" if running and step else
            f"Export the LoRA of step {step:,} as a file your UI loads" if step else
            "The base model has no LoRA to export: pick an image of a checkpoint" if picked else
            "Pick an image of a checkpoint first")

    def _preview_pixels(self) -> int:
        return round(PREVIEW_SIZE * self.devicePixelRatioF())

    def _on_image(self, path: str, max_side: int, image: QImage) -> None:
        if max_side != self._preview_pixels() or self._cell is None or self._cell.path != path:
            return  # a thumbnail, or an image picked before the one shown now
        if image.isNull():
            self.preview_label.setText(f"The image file is gone:\n{path}")
            return
        self._pixmap = QPixmap.fromImage(image)
        self._fit()

    def _fit(self) -> None:
        if self._pixmap.isNull():
            return
        dpr = self.devicePixelRatioF()
        pixmap = self._pixmap.scaled(self.preview_label.size() * dpr, Qt.AspectRatioMode.KeepAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
        pixmap.setDevicePixelRatio(dpr)
        self.preview_label.setPixmap(pixmap)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()  # on any resize: the window's, and the splitter's as it fits the grid
