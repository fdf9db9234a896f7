"""The main window: a welcome page until a project is open, then three tabs in the order of the work —
Dataset (grid, caption, health), Settings, Train (run panel and run history).

The window owns the shared pieces: the project's settings store, the undo stack for caption and
exclusion edits, and the dataset model. Scans run on a pool thread; a newer scan supersedes an older.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QUndoStack
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QSplitter, QStackedWidget, QTabWidget, QVBoxLayout, QWidget

from lora_studio.core.dataset import scan
from lora_studio.core.errors import UserError
from lora_studio.core.runs import RunDir
from lora_studio.core.project import (
    Project, add_recent_project, create_project, forget_recent_project, is_project, open_project, recent_projects,
)
from lora_studio.gui import dialog_dirs, guide, menus, window_layout
from lora_studio.gui.dataset.bulk_actions import BulkActions, BulkActionsBar
from lora_studio.gui.dataset.caption_editor import CaptionEditor, CaptionWriter
from lora_studio.gui.dataset.health_panel import HealthPanel
from lora_studio.gui.dataset.model import DatasetModel
from lora_studio.gui.dataset.regularization import RegularizationSection
from lora_studio.gui.dataset.regularization_scan import RegularizationScan
from lora_studio.gui.dataset.rows import grid_rows
from lora_studio.gui.dataset.view import DatasetView
from lora_studio.gui.new_project_dialog import NewProjectDialog
from lora_studio.gui.notify import Notifier
from lora_studio.gui.pages import TrainPage, WelcomePage
from lora_studio.gui.run.start_check import refusal
from lora_studio.gui.settings.panel import SettingsPanel
from lora_studio.gui.settings.places import screen_name
from lora_studio.gui.store import ConfigStore
from lora_studio.gui.tasks import run_in_background

APP_TITLE = "LoRA Studio"
# Settings that change which images train or with what caption: the grid must be rescanned (the dataset's
# scan leaves out a regularisation folder that lies inside the image folder). The regularisation folder's
# own scan follows its settings by itself (RegularizationScan).
RESCAN_KEYS = {"", "dataset.path", "dataset.caption_extension", "dataset.repeats", "dataset.default_caption",
               "dataset.regularization.path"}


class MainWindow(QMainWindow):
    def __init__(self, parent: QWidget | None = None, *, find_models: bool = True):
        super().__init__(parent)
        self.setWindowTitle(APP_TITLE)
        self.setAcceptDrops(True)
        self.project: Project | None = None
        self._scan_generation = 0
        self._grid_read = False  # the open project's dataset has been read (Start checks it has images to train)
        self._check_after_scan = False

        self.store = ConfigStore(self)
        self.undo_stack = QUndoStack(self)
        self.writer = CaptionWriter(self)
        self.model = DatasetModel(self)
        self.bulk = BulkActions(self.undo_stack, self.writer, self.store, self.model.items, self)

        self.dataset_view = DatasetView(self.model, self.store, self.bulk)
        self.caption_editor = CaptionEditor(self.undo_stack, self.writer, store=self.store)
        self.health = HealthPanel(self.store, self.undo_stack, self.writer, self.bulk)
        self.bulk_bar = BulkActionsBar(self.bulk)
        # One scan of the regularisation folder for the Dataset tab's section and the Settings tab's budget.
        self.reg_scan = RegularizationScan(self.store, self)
        self.regularization = RegularizationSection(self.store, self.reg_scan)
        self.settings_panel = SettingsPanel(self.store, find_models=find_models, regularization=self.reg_scan)
        self.train_page = TrainPage()
        self.train_page.settings_requested.connect(lambda: self.tabs.setCurrentIndex(1))
        self.notifier = Notifier(self)
        self.quit_guard = None  # made with the run panel

        self.tabs = QTabWidget()
        self.tabs.setObjectName("mainTabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self._dataset_page(), "1  Dataset")
        self.tabs.addTab(self.settings_panel, "2  Settings")
        self.tabs.addTab(self.train_page, "3  Train")
        self.welcome = WelcomePage(APP_TITLE)
        self.welcome.new_requested.connect(self.new_project_dialog)
        self.welcome.open_requested.connect(self.open_project_dialog)
        self.welcome.project_chosen.connect(self.open_project)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.tabs)
        self.setCentralWidget(self.pages)
        menus.build(self)
        self._connect()
        self._rescan_timer = QTimer(self, singleShot=True, interval=250)
        self._rescan_timer.timeout.connect(self.rescan)
        self._restore_layout()
        self._refresh_recent()

    # --- layout ----------------------------------------------------------------------------------

    def _dataset_page(self) -> QWidget:
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(12, 12, 6, 8)
        lv.addWidget(self.dataset_view, 1)
        lv.addWidget(self.regularization)
        lv.addWidget(self.bulk_bar)
        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(_padded(self.caption_editor))
        self.right_splitter.addWidget(_padded(self.health))
        self.right_splitter.setStretchFactor(0, 3)
        self.right_splitter.setStretchFactor(1, 2)
        self.dataset_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.dataset_splitter.addWidget(left)
        self.dataset_splitter.addWidget(self.right_splitter)
        self.dataset_splitter.setStretchFactor(0, 3)
        self.dataset_splitter.setStretchFactor(1, 2)
        self.dataset_splitter.setSizes([820, 460])
        return self.dataset_splitter

    def ensure_train_page(self):
        """Build the run panel and history (once); returns the run panel."""
        if self.train_page.build():
            from lora_studio.gui.run.quitting import QuitGuard

            panel = self.train_page.run_panel
            panel.run_started.connect(lambda _d: self.statusBar().showMessage("Training started.", 5000))
            panel.fix_applied.connect(self._apply_fix)
            panel.run.changed.connect(lambda _e: self._update_title())
            panel.ended.connect(self._ended)
            self.quit_guard = QuitGuard(self, panel)
            self._connect_runs()
        return self.train_page.run_panel

    @property
    def run_panel(self):
        return self.train_page.run_panel

    @property
    def run_history(self):
        return self.train_page.run_history

    @property
    def ready_label(self) -> QLabel:
        return self.train_page.ready_label

    def _connect_runs(self) -> None:
        if self.run_panel is None:
            return
        project = self.project
        self.run_panel.set_run_source(self._make_run if project else None)
        self.run_panel.set_runs_dir(project.runs_dir if project else None)
        self.run_history.set_runs_dir(project.runs_dir if project else None)

    def _training(self) -> bool:
        return self.run_panel is not None and self.run_panel.is_training()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self.run_panel is None:
            # Just after the first paint: the window appears at once, the Train tab is ready soon after,
            # and the engine is asked about the GPU (a child process) for the memory verdict.
            QTimer.singleShot(50, self.ensure_train_page)
            QTimer.singleShot(500, self.settings_panel.memory.ask_about_the_gpu)

    def _connect(self) -> None:
        self.dataset_view.current_changed.connect(self.caption_editor.set_item)
        self.dataset_view.dataset_changed.connect(lambda: self.rescan(check=True))
        self.caption_editor.next_requested.connect(self.dataset_view.step)
        self.writer.written.connect(self.model.set_caption)
        self.writer.written.connect(self.health.caption_written)
        self.health.image_activated.connect(self._show_image)
        self.health.check_button.clicked.connect(lambda: self.reg_scan.rescan())  # "Check again" reads that folder again too
        self.store.changed.connect(self._config_changed)
        self.store.problems_changed.connect(self._update_ready)
        self.store.save_failed.connect(lambda m: self.statusBar().showMessage(m, 10_000))
        self.bulk.message.connect(lambda m: self.statusBar().showMessage(m, 8000))
        self.settings_panel.budget_changed.connect(lambda _t: self._update_ready())
        self.settings_panel.memory.summary_changed.connect(lambda _s: self._update_ready())
        self.tabs.currentChanged.connect(lambda i: self.ensure_train_page() if i == 2 else None)

    # --- projects --------------------------------------------------------------------------------

    def open_project(self, path: str | Path) -> bool:
        try:
            project = open_project(path)
            cfg = project.load_config()
        except UserError as e:
            QMessageBox.warning(self, "Cannot open project", f"{e.message}\n\n{e.hint}".strip())
            if not is_project(path):
                forget_recent_project(path)
            self._refresh_recent()
            return False
        if not self._leave_project():
            return False
        self.project = project
        self.store.load(project, cfg)
        self.model.set_thumb_dir(project.thumbs_dir)
        self.model.set_items([])
        self._grid_read = False
        self.dataset_view.set_project(project)
        self.caption_editor.set_item(None)
        self.health.clear()
        self._connect_runs()
        add_recent_project(project.root)
        self._refresh_recent()
        self._update_title()
        self.pages.setCurrentWidget(self.tabs)
        self.close_action.setEnabled(True)
        self.rescan(check=True)
        self._update_ready()
        return True

    def new_project(self, root: str | Path, dataset_path: str | Path | None = None) -> bool:
        try:
            project = create_project(root, dataset_path=dataset_path)
        except (UserError, OSError) as e:
            QMessageBox.warning(self, "Cannot create project", getattr(e, "message", str(e)))
            return False
        return self.open_project(project.root)

    def close_project(self) -> None:
        if not self._leave_project():
            return
        self.project = None
        self.store.load(None)
        self.model.set_items([])
        self.dataset_view.set_project(None)
        self._connect_runs()
        self._update_title()
        self.pages.setCurrentWidget(self.welcome)
        self.close_action.setEnabled(False)
        self._refresh_recent()

    def _leave_project(self) -> bool:
        """Save what is pending; refuse while a run trains (its window is the only way to watch it)."""
        if self._training():
            QMessageBox.information(self, "Training is running", "Stop the run in the Train tab before switching projects.")
            return False
        self.caption_editor.commit()
        self.store.flush()
        self.health.cancel()
        self.undo_stack.clear()  # its commands refer to the old project's files and settings
        return True

    def new_project_dialog(self) -> None:
        root = NewProjectDialog.ask(self)  # a name and a place: the dialog refuses a folder that holds files
        if root is not None:
            self.new_project(root)

    def open_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a LoRA Studio project folder", dialog_dirs.start_dir("projects"))
        if folder:
            self.open_project(folder)

    def _make_run(self) -> RunDir:
        """A fresh run folder for Start, or a UserError (shown in the Train tab's banner) when the ready line
        already knows the run would fail: no run folder is made, so no "Failed" run clutters the history."""
        if self.project is None:
            raise UserError("Open a project first.")
        self.caption_editor.commit()
        self.store.flush()
        if error := refusal(self.store.problems, self.model.included_items() if self._grid_read else None):
            raise error
        return self.project.new_run(self.store.config)

    def _apply_fix(self, changes: dict) -> None:
        """Settings accepted from an error (out of memory) go into the project too, so the next run fits."""
        for key, value in changes.items():
            self.store.set(key, value)
        self.statusBar().showMessage("Changed " + ", ".join(f"{screen_name(k)} to {v}" for k, v in changes.items()) + " in the project's settings.", 8000)

    def _refresh_recent(self) -> None:
        recent = recent_projects()
        self.recent_menu.clear()
        for path in recent:
            self.recent_menu.addAction(f"{path.name}  —  {path.parent}", lambda p=path: self.open_project(p))
        self.recent_menu.setEnabled(bool(recent))
        self.welcome.set_recent(recent)

    # --- the dataset -----------------------------------------------------------------------------

    def rescan(self, *, check: bool = False) -> None:
        """Rescan the dataset folder on a pool thread; excluded images are listed too (shown greyed)."""
        if self.project is None:
            return
        self._scan_generation += 1
        generation = self._scan_generation
        self._check_after_scan = self._check_after_scan or check
        dataset = dataclasses.replace(self.store.config.dataset, exclude=[])
        run_in_background(lambda: scan(dataset), lambda result: self._scanned(generation, grid_rows(result, dataset)),
                          lambda error: self._scan_failed(generation, error), owner=self)

    def _scanned(self, generation: int, items: list) -> None:
        if generation != self._scan_generation:
            return
        current = self.caption_editor.item()
        self.model.set_items(items, self.store.get("dataset.exclude"))
        self._grid_read = True
        self.settings_panel.set_dataset(self.model.included_items())
        self.dataset_view.refresh()
        if current is not None and self.model.row_of(current.path) >= 0:
            self.dataset_view.select_path(Path(current.path))
        elif items:
            self.dataset_view.step(0)
        if self._check_after_scan:
            self._check_after_scan = False
            self.health.check()

    def _scan_failed(self, generation: int, error: Exception) -> None:
        if generation != self._scan_generation:
            return
        self.model.set_items([])
        self._grid_read = True
        self.settings_panel.set_dataset([])
        self.dataset_view.refresh()
        self._check_after_scan = False
        self.health.clear("Nothing to check yet: add images first.")
        if isinstance(error, UserError) and error.code != "empty_dataset":
            self.dataset_view.drop_bar.tell(error.message)
        elif not isinstance(error, UserError):
            raise error

    def _config_changed(self, key: str) -> None:
        if key in RESCAN_KEYS and self.project is not None:
            self._rescan_timer.start()
        if key in ("", "dataset.exclude"):
            self.model.set_excluded(self.store.get("dataset.exclude"))
            self.settings_panel.set_dataset(self.model.included_items())
        self._update_ready()

    def _show_image(self, path: Path) -> None:
        self.tabs.setCurrentIndex(0)
        self.dataset_view.select_path(path)

    def _update_ready(self) -> None:
        if self.project is not None:
            memory = self.settings_panel.memory.summary
            warning = ("The memory estimate says these settings do not fit the GPU; Settings has the nearest that do."
                       if memory is not None and memory.verdict == "does_not_fit" else "")
            self.train_page.set_ready(self.store.problems, self.settings_panel.budget_text, warning)

    # --- undo, drops, closing --------------------------------------------------------------------

    def undo(self) -> None:
        self.caption_editor.commit()
        self.undo_stack.undo()

    def redo(self) -> None:
        self.caption_editor.commit()
        self.undo_stack.redo()

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.dataset_view.dragEnterEvent(event)

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.dataset_view.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.project is None:
            return
        self.tabs.setCurrentIndex(0)
        self.dataset_view.dropEvent(event)

    def show_about(self) -> None:
        guide.show_about(self)

    def show_guide(self) -> guide.GuideDialog:
        dialog = guide.GuideDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def _splitters(self) -> dict:
        return {"dataset_splitter": self.dataset_splitter, "right_splitter": self.right_splitter}

    def _restore_layout(self) -> None:
        window_layout.restore(self, self._splitters(), self.tabs)

    def save_layout(self) -> None:
        window_layout.save(self, self._splitters(), self.tabs)
        self.train_page.save_state()

    def _update_title(self) -> None:
        """The project's name, and while a run trains how far it is ("42% — MyStyle — LoRA Studio")."""
        if self.project is None:
            self.setWindowTitle(APP_TITLE)
            return
        panel = self.run_panel
        state = panel.run.state if panel is not None else None
        if panel is not None and panel.run.live and state.finished is None and state.total_steps > 0:
            self.setWindowTitle(f"{100 * state.step // state.total_steps}% — {self.project.name} — {APP_TITLE}")
        else:
            self.setWindowTitle(f"{APP_TITLE} — {self.project.name}")

    def _ended(self, title: str, message: str, failed: bool) -> None:
        if self.quit_guard is None or not self.quit_guard.closing_after_run:  # no news for one who is leaving
            self.notifier.notify(title, message, failed=failed)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self.quit_guard is not None and not self.quit_guard.allow_close():
            event.ignore()  # the artist is asked; the window closes once the run has saved, or not at all
            return
        self.caption_editor.commit()
        self.store.flush()
        self.health.cancel()
        self.save_layout()
        self.model.shutdown()
        super().closeEvent(event)


def _padded(widget: QWidget, margins: tuple[int, int, int, int] = (6, 12, 12, 8)) -> QWidget:
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(*margins)
    layout.addWidget(widget)
    return holder
