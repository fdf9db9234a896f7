"""The Dataset tab's regularisation pictures: where they are, how many, a glance at a few, how much they count.

Regularisation (prior-preservation) pictures show the same kind of subject drawn without the artist's
style; training on them beside the images keeps the LoRA from changing everything else (core/config's
RegularizationConfig). The folder is only ever read: Choose, a drop and Remove set
`dataset.regularization.path` and nothing else, so the artist's files are never moved, copied or deleted.

The pictures are counted by the window's RegularizationScan (regularization_scan.py), which the Settings
tab's budget line shares.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QImage, QPixmap
from PySide6.QtWidgets import QFileDialog, QFormLayout, QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from lora_studio.core.config import key_info
from lora_studio.core.dataset import ScanResult, dataset_root
from lora_studio.core.errors import UserError
from lora_studio.gui import dialog_dirs
from lora_studio.gui.dataset.model import THUMB_SIZE
from lora_studio.gui.dataset.regularization_scan import PATH_KEY, REPEATS_KEY, WEIGHT_KEY, RegularizationScan
from lora_studio.gui.images import decode_image, next_priority, thumb_key
from lora_studio.gui.settings.fields import key_spin, widget_for
from lora_studio.gui.settings.places import say_error
from lora_studio.gui.store import ConfigStore, bind
from lora_studio.gui.tasks import run_in_background

INTRO = ("Pictures of the same kind of subject drawn without your style keep the LoRA from changing "
         "everything else. Optional.")
THUMBS, THUMB_SIDE = 6, 48  # a glance, not a second grid


class RegularizationSection(QFrame):
    """Unset: a line of plain words and Choose folder… (or drop a folder here). Set: the count, a few
    thumbnails, repeats and weight, Show folder and Remove."""

    def __init__(self, store: ConfigStore, scan: RegularizationScan | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("regSection")
        self.setAcceptDrops(True)  # a folder dropped here is this section's; elsewhere the grid's (view.py)
        self.store = store
        self.scan = scan or RegularizationScan(store, self)
        self._thumb_generation = 0

        title = QLabel("Regularisation pictures")
        title.setObjectName("heading")
        title.setToolTip(key_info(PATH_KEY).help)
        self.choose_button, self.show_button, self.remove_button = (
            QPushButton(t) for t in ("Choose folder…", "Show folder", "Remove"))
        self.remove_button.setToolTip("Train without them. The pictures stay where they are.")
        head = QHBoxLayout()
        head.addWidget(title)
        head.addStretch(1)
        for b, slot in ((self.choose_button, self.browse), (self.show_button, self.show_folder), (self.remove_button, self.remove)):
            b.clicked.connect(slot)
            head.addWidget(b)

        self.intro = QLabel(INTRO)
        self.intro.setObjectName("muted")
        self.intro.setWordWrap(True)
        self.message = QLabel()  # the count, a drop's answer, or why the folder cannot be used
        self.message.setWordWrap(True)
        self.message.setMinimumWidth(10)  # a long path must not widen the window
        self.thumbs = [QLabel() for _ in range(THUMBS)]
        thumbs = QHBoxLayout()
        thumbs.setSpacing(4)
        for label in self.thumbs:
            label.setFixedSize(THUMB_SIDE, THUMB_SIDE)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setObjectName("preview")
            thumbs.addWidget(label)
        thumbs.addStretch(1)
        self.repeats = bind(store, REPEATS_KEY, key_spin(REPEATS_KEY))
        self.weight = bind(store, WEIGHT_KEY, widget_for(WEIGHT_KEY, store.get(WEIGHT_KEY)))
        self.weight.setSingleStep(0.1)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow(key_info(REPEATS_KEY).label, self.repeats)
        form.addRow(key_info(WEIGHT_KEY).label, self.weight)
        self.details = QWidget()  # what only a usable folder has
        row = QHBoxLayout(self.details)
        row.setContentsMargins(0, 0, 0, 0)
        row.addLayout(thumbs, 1)
        row.addLayout(form)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addLayout(head)
        layout.addWidget(self.intro)
        layout.addWidget(self.message)
        layout.addWidget(self.details)
        self.scan.changed.connect(self.refresh)
        self.refresh()

    # --- showing ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        folder = self.scan.folder()
        result, error = self.scan.result, self.scan.error
        self.intro.setVisible(not folder)
        self.show_button.setVisible(bool(folder))
        self.remove_button.setVisible(bool(folder))
        self.show_button.setEnabled(bool(folder) and Path(folder).is_dir())
        self.choose_button.setText("Change folder…" if folder else "Choose folder…")
        self.details.setVisible(result is not None and error is None)
        if not folder:
            self.message.clear()  # another project's count must not linger; Remove's note is told after this
            self.message.hide()
            return
        self.message.show()
        self.message.setToolTip(folder)
        self.message.setProperty("warn", error is not None)
        self.message.style().polish(self.message)
        if error is not None:
            self.message.setText(say_error(error))
        elif result is None:
            self.message.setText(f"Looking at the pictures in {self._where(folder)}…")
        else:
            n = len(result.items)
            text = f"{n:,} regularisation picture{'s' if n != 1 else ''} in {self._where(folder)}"
            if result.skipped:
                text += f" · {len(result.skipped):,} can't be opened"
            self.message.setText(text)
            self._load_thumbnails(result)

    def _where(self, folder: str) -> str:
        path = Path(folder).expanduser().resolve()
        project = self.store.project
        if project is not None:
            try:
                return f"the project's {path.relative_to(project.root).as_posix()}/ folder"
            except ValueError:
                pass
        return str(path)

    def _load_thumbnails(self, result: ScanResult) -> None:
        """The first few pictures, decoded on the pool (the grid's decoder and its thumbnail cache)."""
        self._thumb_generation += 1
        generation = self._thumb_generation
        cache_dir = self.store.project.thumbs_dir if self.store.project is not None else None
        for i, label in enumerate(self.thumbs):
            item = result.items[i] if i < len(result.items) else None
            label.setVisible(item is not None)
            label.clear()
            if item is None:
                continue
            label.setToolTip(f"{item.rel}\n{item.caption or 'No caption'}")
            key = thumb_key(item.path)
            cache = cache_dir / f"{key}.png" if cache_dir is not None and key else None

            def work(path: Path = item.path, cache: Path | None = cache) -> QImage:
                # Scaled on the worker too: QImage (unlike QPixmap) may be used off the GUI thread.
                return decode_image(path, THUMB_SIZE, cache).scaled(
                    QSize(THUMB_SIDE, THUMB_SIDE), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)

            run_in_background(work, lambda image, i=i: self._thumb_landed(generation, i, image),
                              lambda _e, i=i: self._thumb_landed(generation, i, QImage()), owner=self, priority=next_priority())

    def _thumb_landed(self, generation: int, i: int, image: QImage) -> None:
        if generation != self._thumb_generation:
            return
        if image.isNull():
            self.thumbs[i].setText("?")
        else:
            self.thumbs[i].setPixmap(QPixmap.fromImage(image))

    # --- choosing, dropping, removing --------------------------------------------------------------

    def use_folder(self, folder: Path) -> None:
        """Train with the pictures in `folder`, where they are (nothing is copied)."""
        folder = folder.expanduser().resolve()
        try:
            if folder == dataset_root(self.store.config.dataset):
                self._tell("That is your image folder; regularisation pictures need a folder of their own.")
                return
        except UserError:
            pass  # no image folder yet: any folder will do
        self.message.clear()
        self.store.set(PATH_KEY, str(folder))

    def browse(self) -> None:
        current = self.scan.folder()
        start = dialog_dirs.start_dir("regularization", Path(current).parent if current else None)
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of regularisation pictures", start)
        if folder:
            dialog_dirs.remember("regularization", folder)
            self.use_folder(Path(folder))

    def show_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(self.scan.folder()))

    def remove(self) -> None:
        folder = self.scan.folder()
        self.store.set(PATH_KEY, "")  # only the setting: the pictures are the artist's
        self._tell(f"Training without regularisation pictures now. They are still in {folder}.")

    def _tell(self, text: str) -> None:
        self.message.setProperty("warn", False)
        self.message.style().polish(self.message)
        self.message.setText(text)
        self.message.show()

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        # Any local files: a drop of loose pictures here is answered, never handed on to the grid to copy.
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    dragMoveEvent = dragEnterEvent  # noqa: N815 - Qt's name

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        if len(paths) == 1 and paths[0].is_dir():
            self.use_folder(paths[0])
        else:
            self._tell("Drop the one folder that holds the regularisation pictures; they are used where they are.")
