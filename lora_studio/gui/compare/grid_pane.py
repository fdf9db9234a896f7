"""The comparison dialog's left pane: one prompt's grid at a time (a tab per prompt), the prompt and its seed
above it, the recommended checkpoint's sentence above all, and what to do when there is nothing to show yet.
Thumbnails are decoded off the GUI thread and kept, so switching prompts does not decode them again."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QTabBar, QVBoxLayout, QWidget

from lora_studio.core import events as ev
from lora_studio.core.ranking import Recommendation
from lora_studio.gui.compare.grid import THUMB_SIZE, CellKey, CompareGrid
from lora_studio.gui.compare.results import CompareResults
from lora_studio.gui.images import ImageLoader


class CompareGridPane(QWidget):
    prompt_changed = Signal(int)  # the artist picked another prompt's tab
    reshaped = Signal()  # the grid has new rows or columns, so it wants another width

    def __init__(self, results: CompareResults, trigger_word: str, has_checkpoints: bool, loader: ImageLoader,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self._results = results
        self._trigger_word = trigger_word
        self._has_checkpoints = has_checkpoints
        self._loader = loader
        self._loader.loaded.connect(self._on_image)
        self._structure: tuple | None = None
        self._images: dict[str, QImage] = {}  # decoded thumbnails by path
        self._requested: set[str] = set()

        self.recommendation_label = QLabel(self)
        self.recommendation_label.setWordWrap(True)
        self.recommendation_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.recommendation_label.hide()
        self.prompt_tabs = QTabBar(self)
        self.prompt_tabs.setExpanding(False)
        self.prompt_tabs.setElideMode(Qt.TextElideMode.ElideNone)  # shortened by us, to a whole word
        self.prompt_tabs.setStyleSheet("QTabBar::tab { padding: 5px 12px; font-weight: normal; }"
                                       "QTabBar::tab:selected { font-weight: normal; }")
        self.prompt_tabs.setUsesScrollButtons(True)
        self.prompt_tabs.currentChanged.connect(lambda i: i >= 0 and self.prompt_changed.emit(i))
        self.prompt_tabs.hide()
        self.prompt_label = QLabel(self)
        self.prompt_label.setObjectName("muted")
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.grid = CompareGrid(self)
        self.empty_label = QLabel(self)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setObjectName("muted")
        self.empty_label.setWordWrap(True)
        grid_holder = QWidget(self)
        holder_layout = QVBoxLayout(grid_holder)
        holder_layout.setContentsMargins(0, 0, 0, 0)
        holder_layout.addWidget(self.grid)
        holder_layout.addWidget(self.empty_label, 1)
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(grid_holder)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.recommendation_label)
        layout.addWidget(self.prompt_tabs)
        layout.addWidget(self.prompt_label)
        layout.addWidget(self.scroll, 1)

    def set_recommendation(self, rec: Recommendation | None) -> None:
        """The ranking's checkpoint: its sentence above the grid and a star on its row (when it is one)."""
        self.recommendation_label.setText(f"★ <b>Recommended</b> — {html.escape(rec.sentence, quote=False)}" if rec else "")
        self.recommendation_label.setVisible(rec is not None)
        self.grid.set_recommended(rec.step if rec else None)

    def current_prompt(self) -> int:
        return max(0, self.prompt_tabs.currentIndex())

    def prompt_count(self) -> int:
        return self.prompt_tabs.count()

    # --- structure ----------------------------------------------------------------------------------

    def rebuild_if_needed(self, selected: CellKey | None, waiting: bool) -> bool:
        if self._structure_now() == self._structure:
            return False
        self.rebuild(selected, waiting)
        return True

    def _structure_now(self) -> tuple:
        prompt = self.current_prompt()
        return (*self._results.rows_and_columns(prompt), tuple(self._results.prompt_titles()), prompt)

    def rebuild(self, selected: CellKey | None, waiting: bool) -> None:
        """Tabs for the prompts, then the current prompt's grid with the images made so far."""
        titles = self._results.prompt_titles()
        self.prompt_tabs.blockSignals(True)
        current = self.current_prompt()
        while self.prompt_tabs.count() > len(titles):
            self.prompt_tabs.removeTab(self.prompt_tabs.count() - 1)
        for i, title in enumerate(titles):
            short = title if len(title) <= 40 else title[:38].rsplit(" ", 1)[0].rstrip(" ,") + "…"
            if i >= self.prompt_tabs.count():
                self.prompt_tabs.addTab(short)
            else:
                self.prompt_tabs.setTabText(i, short)
            self.prompt_tabs.setTabToolTip(i, title)
        if titles:
            self.prompt_tabs.setCurrentIndex(min(current, len(titles) - 1))
        self.prompt_tabs.blockSignals(False)
        self.prompt_tabs.setVisible(len(titles) > 1)

        prompt = self.current_prompt()
        rows, columns = self._results.rows_and_columns(prompt)
        self._structure = self._structure_now()
        if not rows:
            self.grid.hide()
            self.prompt_label.hide()
            self.empty_label.setText(
                "The grid shows each checkpoint at the strengths you choose, next to the base model, with the same "
                "seed, so the differences are the LoRA's.\n\nChoose checkpoints and strengths above, then Generate."
                if self._has_checkpoints else "This run has no checkpoint yet.")
            self.empty_label.show()
            return
        self.empty_label.hide()
        self.grid.show()
        self.grid.set_structure(prompt, rows, columns, self._trigger_word, waiting)
        self.reshaped.emit()
        self.grid.select(selected)
        self._update_prompt_label(titles)
        for cell in self._results.prompt_cells(prompt):
            widget = self.grid.set_cell(cell)
            if widget is not None and cell.path in self._images:
                widget.set_image(self._images[cell.path])
            else:
                self._request_thumb(cell.path)

    def show_new_cell(self, cell: ev.CompareCell, key: CellKey, selected: CellKey | None, waiting: bool) -> None:
        """An image the engine just wrote: into the grid if it fits the grid's shape, else a new shape."""
        self._images.pop(cell.path, None)  # the same file name may have been made again
        self._requested.discard(cell.path)
        if not self.rebuild_if_needed(selected, waiting) and key[0] == self.current_prompt():
            self.grid.set_cell(cell)
            self._request_thumb(cell.path)
            self._update_prompt_label()

    def _update_prompt_label(self, titles: list[str] | None = None) -> None:
        titles = self._results.prompt_titles() if titles is None else titles
        prompt = self.current_prompt()
        if prompt >= len(titles):
            self.prompt_label.hide()
            return
        seeds = self._results.prompt_seeds(prompt)
        seed = f" · seed {seeds.pop()}" if len(seeds) == 1 else ""
        self.prompt_label.setText(f"Prompt: “{html.escape(titles[prompt], quote=False)}”{seed}")
        self.prompt_label.show()

    # --- thumbnails ---------------------------------------------------------------------------------

    def forget_images(self) -> None:
        """A new comparison: thumbnails still decoding belong to the old one and are dropped when they come."""
        self._images.clear()
        self._requested.clear()

    def _thumb_pixels(self) -> int:
        return round(THUMB_SIZE * self.devicePixelRatioF())

    def _request_thumb(self, path: str) -> None:
        if path in self._images or path in self._requested:
            return
        self._requested.add(path)
        self._loader.request(path, self._thumb_pixels())

    def _on_image(self, path: str, max_side: int, image: QImage) -> None:
        if max_side != self._thumb_pixels() or path not in self._requested:
            return  # the large view's, or from before a new comparison started
        self._images[path] = image
        self.grid.set_image(path, image)
