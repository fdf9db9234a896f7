"""Dataset health: the doctor's findings in plain words, each with its one-click fix.

The check decodes every image, so it runs on a pool thread with a progress bar; a newer check (or a
closed project) makes an older one stop at its next image. Fixes go through the undo stack: leaving an
image out is a `dataset.exclude` entry, and caption fixes keep the previous file for undo. The regularisation
folder's findings (core/doctor.check_regularization) are listed with them but kept apart, in `reg_findings`:
they have no fix (those pictures are not the dataset's to exclude or recaption) and lie outside the image folder.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSizePolicy, QVBoxLayout, QWidget,
)

from lora_studio.core.captions import read_caption
from lora_studio.core.dataset import caption_path_for, dataset_root, is_excluded, normalize_rel, regularization_folders
from lora_studio.core.doctor import Finding, apply_fix, check_dataset, check_regularization, check_trigger
from lora_studio.core.errors import UserError
from lora_studio.core.tokens import MAX_CAPTION_TOKENS, count_tokens
from lora_studio.gui.dataset.bulk_actions import BulkActions
from lora_studio.gui.dataset.caption_editor import CaptionChange, CaptionWriter, SetCaptionsCommand, read_bytes
from lora_studio.gui.settings.places import say
from lora_studio.gui.store import ConfigStore
from lora_studio.gui.tasks import run_in_background

FIX_LABELS = {"exclude": "Leave out", "write_default_caption": "Write default caption", "trim_caption": "Trim to fit",
              "resave_utf8": "Re-save as UTF-8", "add_trigger": "Add trigger word"}
SEVERITY = {"unreadable": "error", "not_utf8": "error", "duplicate": "warn", "too_small": "warn", "long_caption": "warn",
            "missing_caption": "warn", "empty_caption": "warn", "odd_mode": "info", "trigger_missing": "warn",
            "mask_unreadable": "error", "mask_size": "warn", "mask_missing": "info", "reg_trigger": "warn",
            "reg_unusable": "error"}
SEVERITY_ORDER = {"error": 0, "warn": 1, "info": 2}
KIND_ORDER = {k: i for i, k in enumerate(("unreadable", "not_utf8", "mask_unreadable", "reg_unusable", "trigger_missing", "reg_trigger",
                                           "duplicate", "too_small", "mask_size", "long_caption", "empty_caption", "missing_caption",
                                           "mask_missing", "odd_mode"))}
MAX_ROWS = 300  # beyond this the list is noise; the summary still counts everything


class _Cancelled(Exception):
    pass


def regularization_findings(dataset, resolution: int, trigger: str) -> list[Finding]:
    """check_regularization's findings; a folder that cannot be used is one finding, not a failed check
    (the dataset's own findings still count)."""
    try:
        return check_regularization(dataset, resolution, trigger=trigger)
    except UserError as e:
        text = e.template + (f" {e.hint_template}" if e.hint_template else "")
        return [Finding("reg_unusable", Path(dataset.regularization.path), text)]


def _order(f: Finding) -> tuple[int, int]:
    # What stops training first, then what spoils it, then notes; scan order within each kind.
    return SEVERITY_ORDER[SEVERITY.get(f.kind, "warn")], KIND_ORDER.get(f.kind, 99)


class _Progress(QObject):
    step = Signal(int, int)


class HealthPanel(QWidget):
    image_activated = Signal(object)  # the Path of the image a finding is about
    checked = Signal(list)  # the findings of a finished check

    def __init__(self, store: ConfigStore, undo_stack: QUndoStack, writer: CaptionWriter, bulk: BulkActions,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.store, self.undo_stack, self.writer, self.bulk = store, undo_stack, writer, bulk
        self.findings: list[Finding] = []
        self.reg_findings: list[Finding] = []
        self._reg_checks = 0
        self._checked = False  # a check has run: a new trigger word is then checked against the captions
        self._trigger_checks = 0
        self._checked_reg: frozenset[Path] = frozenset()  # the regularisation folder the last check left out
        self._cancel = threading.Event()
        self._progress = _Progress(self)
        self._progress.step.connect(self._on_progress)

        title = QLabel("Dataset health")
        title.setObjectName("heading")
        self.summary = QLabel("Not checked yet.")
        self.summary.setWordWrap(True)
        self.check_button = QPushButton("Check again")
        self.check_button.setToolTip("Open every image and caption and look for problems that would spoil training")
        self.check_button.clicked.connect(self.check)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(6)
        self.bar.hide()
        self.list = QListWidget()
        self.list.setObjectName("findings")
        self.list.setVerticalScrollMode(QListWidget.ScrollMode.ScrollPerPixel)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # rows wrap instead
        self.list.setSelectionMode(QListWidget.SelectionMode.SingleSelection)
        self.list.viewport().installEventFilter(self)
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)

        head = QHBoxLayout()
        head.addWidget(title)
        head.addStretch(1)
        head.addWidget(self.check_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.summary)
        layout.addWidget(self.bar)
        layout.addWidget(self.list, 1)
        store.changed.connect(self._config_changed)

    # --- checking --------------------------------------------------------------------------------

    def check(self) -> None:
        self.cancel()
        self._cancel = cancel = threading.Event()
        dataset = dataclasses.replace(self.store.config.dataset, exclude=list(self.store.config.dataset.exclude))
        resolution = self.store.config.train.resolution
        trigger = self.store.config.output.trigger
        self._checked_reg = regularization_folders(dataset)
        emit = self._progress.step.emit

        def progress(done: int, total: int) -> None:
            if cancel.is_set():
                raise _Cancelled
            emit(done, total)

        def work() -> tuple[list[Finding], list[Finding]]:
            found = check_dataset(dataset, resolution, trigger=trigger, progress=progress)
            if cancel.is_set():
                raise _Cancelled
            return found, regularization_findings(dataset, resolution, trigger)

        self.bar.setRange(0, 0)
        self.bar.show()
        self.summary.setText("Checking every image…")
        self.check_button.setEnabled(False)
        self._reg_checks += 1  # a reg-only check asked for before this one is older than it
        reg_ticket = self._reg_checks
        run_in_background(work, lambda f: self._done(cancel, f, reg_ticket), lambda e: self._failed(cancel, e), owner=self)

    def cancel(self) -> None:
        self._cancel.set()

    def _on_progress(self, done: int, total: int) -> None:
        self.bar.setRange(0, total)
        self.bar.setValue(done)
        self.summary.setText(f"Checking image {done:,} of {total:,}…")

    def _done(self, cancel: threading.Event, found: tuple[list[Finding], list[Finding]], reg_ticket: int) -> None:
        if cancel is not self._cancel:
            return  # a newer check is on its way
        findings, reg_findings = found
        if reg_ticket == self._reg_checks:  # else a reg-only check asked for since has the newer settings
            self.reg_findings = reg_findings
        self._finish()
        self._checked = True
        self._set_findings(findings)
        self.checked.emit(findings + self.reg_findings)

    def _set_findings(self, findings: list[Finding]) -> None:
        self.findings = sorted(findings, key=_order)
        self._show()

    def _failed(self, cancel: threading.Event, error: Exception) -> None:
        if cancel is not self._cancel or isinstance(error, _Cancelled):
            return
        self._finish()
        self.findings, self.reg_findings = [], []
        self.list.clear()
        self.summary.setText(say(error.template) if isinstance(error, UserError) else f"The check failed: {error}")

    def _finish(self) -> None:
        self.bar.hide()
        self.check_button.setEnabled(True)

    def clear(self, message: str = "Not checked yet.") -> None:
        self.cancel()
        self._finish()
        self._checked = False
        self.findings, self.reg_findings = [], []
        self.list.clear()
        self.summary.setText(message)

    # --- showing ---------------------------------------------------------------------------------

    def _visible(self) -> list[Finding]:
        # A finding about an image left out since the check is already dealt with.
        exclude = {normalize_rel(e) for e in self.store.config.dataset.exclude}
        try:
            root = dataset_root(self.store.config.dataset)
        except UserError:
            return []
        out = []
        for f in self.findings:
            if f.paths:  # about the dataset as a whole
                out.append(f)
                continue
            try:
                rel = Path(f.path).resolve().relative_to(root).as_posix()
            except ValueError:
                continue
            if not is_excluded(rel, exclude):
                out.append(f)
        return out

    def _show(self) -> None:
        self.list.clear()
        visible = sorted(self._visible() + self.reg_findings, key=_order)
        problems = [f for f in visible if SEVERITY.get(f.kind) != "info"]
        if not visible:
            self.summary.setText("Everything looks good: every image opens and has a caption that fits.")
        elif not problems:
            self.summary.setText("Everything trains. A few images are converted automatically (see below).")
        else:
            n = len(problems)
            self.summary.setText(f"{n} thing{'s' if n != 1 else ''} to look at before training. Click one to see its image.")
        for finding in visible[:MAX_ROWS]:
            self._add_row(finding)
        if len(visible) > MAX_ROWS:
            self.list.addItem(f"…and {len(visible) - MAX_ROWS:,} more.")

    def _add_row(self, finding: Finding) -> None:
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, finding)
        row = QWidget()
        row.setObjectName("findingRow")
        dot = QLabel("●")
        dot.setObjectName(f"sev_{SEVERITY.get(finding.kind, 'warn')}")
        dot.setAlignment(Qt.AlignmentFlag.AlignTop)
        text = QLabel(say(finding.message))
        text.setWordWrap(True)
        text.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        layout = QHBoxLayout(row)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addWidget(dot)
        layout.addWidget(text, 1)
        if finding.fix:
            button = QPushButton(FIX_LABELS.get(finding.fix, "Fix"))
            button.setObjectName("fixButton")
            button.clicked.connect(lambda _=False, f=finding: self.fix(f))
            layout.addWidget(button, 0, Qt.AlignmentFlag.AlignTop)
        self.list.addItem(item)
        self.list.setItemWidget(item, row)
        self._fit_row(item)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        # The list's viewport, not the panel: it also narrows when the scroll bar appears, and rows fitted
        # to the wider width would put their fix buttons ("Leave out") under the scroll bar.
        if obj is self.list.viewport() and event.type() == QEvent.Type.Resize:
            for i in range(self.list.count()):
                self._fit_row(self.list.item(i))
        return super().eventFilter(obj, event)

    def _fit_row(self, item: QListWidgetItem) -> None:
        # Wrapped text changes height with the width: the row must be told its height for this width.
        w = self.list.itemWidget(item)
        if w is None:
            return
        width = max(100, self.list.viewport().width())
        h = w.heightForWidth(width) if w.hasHeightForWidth() else w.sizeHint().height()
        item.setSizeHint(QSize(width, max(h, w.minimumSizeHint().height())))

    def _activated(self, item: QListWidgetItem) -> None:
        finding = item.data(Qt.ItemDataRole.UserRole)
        if isinstance(finding, Finding):
            self.image_activated.emit(Path(finding.paths[0] if finding.paths else finding.path))

    def caption_written(self, image: Path, caption: str | None) -> None:
        """Drop the caption findings a new caption settled, without decoding everything again."""
        if not caption:
            return
        fits = count_tokens(caption) <= MAX_CAPTION_TOKENS
        settled = {"missing_caption", "empty_caption", "not_utf8"} | ({"long_caption"} if fits else set())
        kept = [f for f in self.findings if not (Path(f.path) == Path(image) and f.kind in settled)]
        if len(kept) != len(self.findings):
            self.findings = kept
            self._show()

    def _config_changed(self, key: str) -> None:
        if key in ("", "dataset.exclude") and self.findings:
            self._show()
        if key == "output.trigger" and self._checked:
            self._check_trigger()
        if key == "dataset.regularization.path" and self._checked and self._moves_training_images():
            self.check()  # pictures left the dataset (or came back): its findings are no longer true
        elif key in ("output.trigger", "dataset.regularization.path", "dataset.caption_extension") and self._checked:
            self._check_regularization()

    def _moves_training_images(self) -> bool:
        """Whether the regularisation folder is, or was at the last check, inside the image folder: the
        dataset's scan skips it (core/dataset.regularization_folders), so the images it holds changed."""
        try:
            root = dataset_root(self.store.config.dataset)
        except UserError:
            return False
        folders = self._checked_reg | regularization_folders(self.store.config.dataset)
        return any(f == root or root in f.parents for f in folders)

    def _check_regularization(self) -> None:
        """Check only the regularisation folder (a new one, or its captions against a new trigger word), off
        the GUI thread; of several quick edits only the last one's answer is shown."""
        self._reg_checks += 1
        ticket = self._reg_checks
        dataset = dataclasses.replace(self.store.config.dataset, exclude=[])
        resolution, trigger = self.store.config.train.resolution, self.store.config.output.trigger

        def done(found: list[Finding]) -> None:
            if ticket == self._reg_checks and self._checked:
                self.reg_findings = found
                self._show()

        run_in_background(lambda: regularization_findings(dataset, resolution, trigger), done, lambda _e: None, owner=self)

    def _check_trigger(self) -> None:
        """Check a new trigger word against the captions (not the images again), off the GUI thread; of
        several quick edits only the last one's answer is shown."""
        self._trigger_checks += 1
        ticket = self._trigger_checks
        dataset = dataclasses.replace(self.store.config.dataset, exclude=list(self.store.config.dataset.exclude))
        trigger = self.store.config.output.trigger

        def done(found: list[Finding]) -> None:
            if ticket == self._trigger_checks and self._checked:
                self._set_findings([f for f in self.findings if f.kind != "trigger_missing"] + found)

        run_in_background(lambda: check_trigger(dataset, trigger), done, lambda _e: None, owner=self)

    # --- fixing ----------------------------------------------------------------------------------

    def fix(self, finding: Finding) -> None:
        dataset = self.store.config.dataset
        try:
            if finding.fix == "exclude":
                rel = Path(finding.path).resolve().relative_to(dataset_root(dataset)).as_posix()
                self.bulk.set_excluded([rel], True)
            else:
                self._fix_captions(finding, dataset)
        except UserError as e:
            self.summary.setText(say(e.template))
            return
        self.findings = [f for f in self.findings if f is not finding]
        self._show()

    def _fix_captions(self, finding: Finding, dataset) -> None:
        """Carry out a caption fix as one undo step, over every caption file it wrote."""
        images = [Path(p) for p in finding.paths] or [Path(finding.path)]
        files = [(image, caption_path_for(image, dataset)) for image in images]
        old = {path: read_bytes(path) for _, path in files}
        apply_fix(finding, dataset)  # writes the caption files (atomically)
        changes = [CaptionChange(image, path, old[path], read_caption(path)) for image, path in files if read_bytes(path) != old[path]]
        if changes:
            what = f"caption of {images[0].name}" if len(images) == 1 else f"{len(changes)} captions"
            self.undo_stack.push(SetCaptionsCommand(self.writer, changes, f"Fix {what}", already_done=True))
