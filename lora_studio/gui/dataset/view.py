"""The image grid, and getting images in: drop folders or files anywhere on the window, or use the buttons.

A drop asks once, in a bar above the grid, whether to copy the images into the project's `images/`
folder or to train on a dropped folder where it is (the artist's files stay untouched either way).
"Remember" makes that the answer from then on; the bar still says which happened, every time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, QSettings, QSize, QSortFilterProxyModel, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView, QFileDialog, QFrame, QHBoxLayout, QLabel, QLineEdit, QListView, QMenu, QPushButton, QSlider,
    QStackedWidget, QVBoxLayout, QWidget,
)

from lora_studio.core.dataset import dataset_root, is_excluded
from lora_studio.core.errors import UserError
from lora_studio.core.images import IMAGE_EXTENSIONS
from lora_studio.core.project import ImportResult, Project, collect_images, copy_images
from lora_studio.gui import dialog_dirs
from lora_studio.gui.dataset.bulk_actions import BulkActions
from lora_studio.gui.dataset.model import DatasetModel
from lora_studio.gui.dataset.widgets import TEXT_HEIGHT, DropBar, ThumbDelegate
from lora_studio.gui.store import ConfigStore
from lora_studio.gui.tasks import run_in_background

DROP_CHOICE_KEY = "dataset/drop_choice"  # "" (ask) | "copy" | "in_place"


class DatasetView(QWidget):
    current_changed = Signal(object)  # the ImageItem-like row under the cursor, or None
    dataset_changed = Signal()  # files were added or the folder changed: rescan

    def __init__(self, model: DatasetModel, store: ConfigStore, bulk: BulkActions, parent: QWidget | None = None):
        super().__init__(parent)
        self.model, self.store, self.bulk = model, store, bulk
        self.project: Project | None = None
        self._pending: list[Path] = []
        self.setAcceptDrops(True)

        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(model)
        self.proxy.setFilterRole(DatasetModel.SearchRole)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

        self.list = QListView()
        self.list.setObjectName("grid")
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setMouseTracking(True)
        self.list.setDragEnabled(False)
        self.list.setAcceptDrops(False)  # drops go to this widget, which knows about projects
        self.list.viewport().setAcceptDrops(False)
        self.delegate = ThumbDelegate(self.list)
        self.list.setItemDelegate(self.delegate)
        self.list.setModel(self.proxy)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.selectionModel().currentChanged.connect(self._current)
        self.list.selectionModel().selectionChanged.connect(self._selection)

        # Toolbar: what is here, and what can be done with it.
        self.count = QLabel()
        self.count.setObjectName("heading")
        self.folder = QLabel()
        self.folder.setObjectName("muted")
        self.folder.setMinimumWidth(10)  # a long in-place path must not widen the window
        self.filter = QLineEdit(placeholderText="Filter by name or caption", clearButtonEnabled=True)
        self.filter.setMinimumWidth(120)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.filter.textChanged.connect(self._refresh_count)  # the header says how many the filter shows
        self.zoom = QSlider(Qt.Orientation.Horizontal)
        self.zoom.setRange(80, 256)
        self.zoom.setMaximumWidth(110)
        self.zoom.setToolTip("Thumbnail size")
        self.zoom.valueChanged.connect(self.set_icon_size)
        self.exclude_button = QPushButton("Exclude")
        self.exclude_button.setToolTip("Leave the selected images out of training (the files are not touched)")
        self.exclude_button.clicked.connect(lambda: self._set_excluded(True))
        self.include_button = QPushButton("Include")
        self.include_button.clicked.connect(lambda: self._set_excluded(False))
        self.add_button = QPushButton("Add images…")
        self.add_button.clicked.connect(self.browse_files)
        self.folder_button = QPushButton("Use a folder…")
        self.folder_button.clicked.connect(self.browse_folder)
        # Two rows, so the window still fits a small laptop screen beside the caption editor.
        top = QHBoxLayout()
        title = QVBoxLayout()
        title.setSpacing(0)
        title.addWidget(self.count)
        title.addWidget(self.folder)
        top.addLayout(title, 1)
        top.addWidget(self.add_button)
        top.addWidget(self.folder_button)
        tools = QHBoxLayout()
        tools.addWidget(self.filter, 1)
        tools.addWidget(self.zoom)
        tools.addWidget(self.exclude_button)
        tools.addWidget(self.include_button)
        self.empty = self._empty_page()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.list)
        self.drop_bar = DropBar()
        self.drop_bar.chosen.connect(self._chosen)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(tools)
        layout.addWidget(self.drop_bar)
        layout.addWidget(self.stack, 1)
        model.modelReset.connect(self.refresh)
        model.dataChanged.connect(self._refresh_count)  # a bound method: dropped with this view
        self.zoom.setValue(int(QSettings().value("dataset/icon_size", 144)))
        self.set_icon_size(self.zoom.value())
        self.refresh()

    def _empty_page(self) -> QWidget:
        page = QFrame()
        page.setObjectName("emptyState")
        big = QLabel("Drop a folder of images here")
        big.setObjectName("emptyTitle")
        # Lines broken by hand: a word-wrapped label centred in a layout misjudges its own height.
        small = QLabel("or add them with the buttons below. PNG, JPEG and WebP all work;\n"
                       "a .txt file with the same name beside an image is its caption.\n"
                       "20 to 200 images of one style is a good start.")
        small.setObjectName("muted")
        small.setAlignment(Qt.AlignmentFlag.AlignCenter)
        add = QPushButton("Add images…")
        add.setObjectName("primary")
        add.clicked.connect(self.browse_files)
        folder = QPushButton("Use a folder…")
        folder.clicked.connect(self.browse_folder)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(add)
        buttons.addWidget(folder)
        buttons.addStretch(1)
        layout = QVBoxLayout(page)
        layout.addStretch(1)
        layout.addWidget(big, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(small, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addSpacing(12)
        layout.addLayout(buttons)
        layout.addStretch(2)
        return page

    # --- state -----------------------------------------------------------------------------------

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.drop_bar.hide()
        self.refresh()

    def set_icon_size(self, size: int) -> None:
        self.delegate.icon = size
        self.list.setGridSize(QSize(size + 16, size + TEXT_HEIGHT + 16))
        QSettings().setValue("dataset/icon_size", size)
        self.list.doItemsLayout()

    def refresh(self) -> None:
        has_rows = self.model.rowCount() > 0
        self.stack.setCurrentWidget(self.list if has_rows else self.empty)
        try:
            root = dataset_root(self.store.config.dataset)
            where = _short(root, self.project)
            self.folder.setText(f"Training on {where}")
        except UserError:
            self.folder.setText("No image folder yet")
        for w in (self.filter, self.zoom):
            w.setEnabled(has_rows)
        self._refresh_count()
        self._selection()

    def _refresh_count(self, *_: Any) -> None:
        total, shown = self.model.rowCount(), self.proxy.rowCount()
        unusable = self.model.unusable_count()
        excluded = sum(1 for it in self.model.items() if is_excluded(it.rel, self.model.excluded()))
        images = f"{total:,} image{'s' if total != 1 else ''}"
        text = f"{shown:,} of {images} shown" if self.filter.text() and shown != total else images
        if excluded:
            text += f" · {excluded:,} excluded"
        if unusable:
            text += f" · {unusable:,} can't be opened"
        self.count.setText(text if total else "No images yet")

    def selected_items(self) -> list[Any]:
        rows = sorted(self.proxy.mapToSource(i).row() for i in self.list.selectionModel().selectedIndexes())
        return [self.model.item(r) for r in rows]

    def select_path(self, path: Path) -> None:
        row = self.model.row_of(path)
        if row < 0:
            return
        self.filter.clear()
        idx = self.proxy.mapFromSource(self.model.index(row))
        self.list.setCurrentIndex(idx)
        self.list.scrollTo(idx)

    def step(self, delta: int) -> None:
        """Move to the next / previous image (the caption editor's Next button)."""
        n = self.proxy.rowCount()
        if n == 0:
            return
        cur = self.list.currentIndex()
        row = min(max(0, (cur.row() if cur.isValid() else -1) + delta), n - 1)
        self.list.setCurrentIndex(self.proxy.index(row, 0))

    def _current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        src = self.proxy.mapToSource(current)
        self.current_changed.emit(self.model.item(src.row()) if src.isValid() else None)

    def _selection(self, *_: Any) -> None:
        items = self.selected_items()
        excluded = self.model.excluded()
        self.exclude_button.setEnabled(any(not is_excluded(it.rel, excluded) for it in items))
        self.include_button.setEnabled(any(is_excluded(it.rel, excluded) for it in items))

    def _set_excluded(self, exclude: bool) -> None:
        self.bulk.set_excluded([it.rel for it in self.selected_items()], exclude)
        self._selection()

    def _context_menu(self, pos) -> None:
        items = self.selected_items()
        if not items:
            return
        menu = QMenu(self)
        exclude = QAction("Exclude from training", menu, enabled=self.exclude_button.isEnabled())
        exclude.triggered.connect(lambda: self._set_excluded(True))
        include = QAction("Include in training", menu, enabled=self.include_button.isEnabled())
        include.triggered.connect(lambda: self._set_excluded(False))
        show = QAction("Show in folder", menu)
        show.triggered.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(items[0].path).parent))))
        menu.addActions([exclude, include])
        menu.addSeparator()
        menu.addAction(show)
        menu.exec(self.list.viewport().mapToGlobal(pos))

    # --- getting images in -----------------------------------------------------------------------

    def browse_files(self) -> None:
        patterns = " ".join(f"*{e}" for e in sorted(IMAGE_EXTENSIONS))
        files, _ = QFileDialog.getOpenFileNames(self, "Add images", dialog_dirs.start_dir("images"), f"Images ({patterns})")
        if files:
            dialog_dirs.remember("images", files[0])
            self.add_paths([Path(f) for f in files])

    def browse_folder(self) -> None:
        # A folder of images is chosen from its parent: open beside the last one.
        last = QSettings().value("dialogs/images", "")
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of images", dialog_dirs.start_dir("images", Path(last).parent if last else None))
        if folder:
            dialog_dirs.remember("images", folder)
            self.add_paths([Path(folder)])

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.project is not None and event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths and self.project is not None:
            event.acceptProposedAction()
            self.add_paths(paths)

    def add_paths(self, paths: list[Path]) -> None:
        """Files and folders from a drop or a dialog: ask (or use the remembered answer), then do it."""
        if self.project is None:
            return
        images = collect_images(paths)
        if not images:
            self.drop_bar.tell("No images there: drop PNG, JPEG or WebP files, or a folder that holds them.")
            return
        root = self._dataset_dir()
        if root is not None and all(_inside(src, root) for src, _ in images):
            self.drop_bar.tell("Those images are already in the dataset.")
            return
        self._pending = paths
        one_folder = len(paths) == 1 and paths[0].is_dir()
        can_copy = root is None or root == self.project.images_dir.resolve() or self.model.rowCount() == 0
        choice = QSettings().value(DROP_CHOICE_KEY, "") or ""
        if (choice == "in_place" and one_folder) or (choice == "copy" and can_copy):
            self._chosen(choice, False)
            return
        n = len(images)
        images_text = f"{n:,} image{'s' if n != 1 else ''}"
        # The count once: "Add 2 images?", and for a folder its name and what it holds.
        question = f'Add the folder "{paths[0].name}" ({images_text})?' if one_folder else f"Add {images_text}?"
        if not can_copy:
            question += f" This project trains on {_short(root, self.project)} where it is; drop a whole folder to switch to it."
        self.drop_bar.ask(question, can_copy=can_copy, can_use_in_place=one_folder,
                          in_place_note="" if one_folder else "Only a whole folder can be used in place")

    def _chosen(self, choice: str, remember: bool) -> None:
        if remember:
            QSettings().setValue(DROP_CHOICE_KEY, choice)
        paths, self._pending = self._pending, []
        if not paths or self.project is None:
            return
        if choice == "in_place":
            folder = paths[0].resolve()
            self.store.set("dataset.path", str(folder))
            self.store.set("dataset.exclude", [])
            self.store.flush()
            self.drop_bar.tell(f"Now training on {folder} in place. Nothing was copied; only caption edits you make are written there.")
            self.dataset_changed.emit()
            return
        dest = self.project.images_dir
        ext = self.store.config.dataset.caption_extension
        self.drop_bar.tell("Copying…")
        run_in_background(lambda: copy_images(collect_images(paths), dest, ext), self._copied,
                          lambda e: self.drop_bar.tell(f"Copying failed: {e}"), owner=self)

    def _copied(self, result: ImportResult) -> None:
        if self.project is None:
            return
        if Path(self.store.config.dataset.path or "/nonexistent").resolve() != result.dest.resolve():
            self.store.set("dataset.path", str(result.dest))
            self.store.flush()
        n = len(result.copied)
        text = f"Copied {n:,} image{'s' if n != 1 else ''}"
        if result.captions:
            text += f" and {result.captions:,} caption{'s' if result.captions != 1 else ''}"
        text += f" into {_short(result.dest, self.project)}. Your originals were not changed."
        if result.already:
            text += f" {result.already:,} were already there."
        self.drop_bar.tell(text)
        self.dataset_changed.emit()

    def _dataset_dir(self) -> Path | None:
        try:
            return dataset_root(self.store.config.dataset)
        except UserError:
            return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _short(path: Path, project: Project | None) -> str:
    if project is not None:
        try:
            rel = path.resolve().relative_to(project.root)
            return f"the project's {rel.as_posix()}/ folder"
        except ValueError:
            pass
    return str(path)
