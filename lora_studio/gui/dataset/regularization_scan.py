"""The regularisation folder's scan (image headers only), redone on a pool thread when its settings change.

One per window: the Dataset tab's section (regularization.py) and the Settings tab's budget line both read
its one result, so the folder is not read again for every keystroke in another field.
"""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import QObject, Signal

from lora_studio.core.dataset import ScanResult, scan_regularization
from lora_studio.core.errors import UserError
from lora_studio.gui.store import ConfigStore
from lora_studio.gui.tasks import run_in_background

PATH_KEY, REPEATS_KEY, WEIGHT_KEY = "dataset.regularization.path", "dataset.regularization.repeats", "dataset.regularization.loss_weight"
# What the scan's result depends on ("" is a new project or a reloaded file: always read again).
SCAN_KEYS = {"", PATH_KEY, REPEATS_KEY, "dataset.caption_extension"}


class RegularizationScan(QObject):
    """The regularisation folder's scan, redone off the GUI thread when its settings change.

    `result` is the last scan (None when no folder is set or it failed), `error` why it failed."""

    changed = Signal()

    def __init__(self, store: ConfigStore, parent: QObject | None = None):
        super().__init__(parent)
        self.store = store
        self.result: ScanResult | None = None
        self.error: UserError | None = None
        self.scanning = False
        self._key: tuple | None = None
        self._generation = 0
        store.changed.connect(self._config_changed)
        self.rescan()

    def folder(self) -> str:
        return self.store.get(PATH_KEY).strip()

    def budget_items(self) -> list:
        """The pictures the step budget counts ([] while none are known); raises the scan's error."""
        if self.folder() and self.error is not None:
            raise self.error
        return list(self.result.items) if self.result is not None and self.folder() else []

    def _config_changed(self, key: str) -> None:
        if key in SCAN_KEYS:
            self.rescan(force=key == "")

    def rescan(self, force: bool = True) -> None:
        dataset = dataclasses.replace(self.store.config.dataset, exclude=[])  # a snapshot for the worker
        reg = dataset.regularization
        key = (reg.path.strip(), reg.repeats, dataset.caption_extension)
        if key == self._key and not force:
            return
        if self._key is None or key[0] != self._key[0]:
            self.result = None  # another folder: the old count must not be shown as this one's
        self._key, self.error, self.scanning = key, None, bool(key[0])
        self._generation += 1
        generation = self._generation
        if self.scanning:
            run_in_background(lambda: scan_regularization(dataset), lambda r: self._done(generation, r, None),
                              lambda e: self._done(generation, None, e), owner=self)
        self.changed.emit()

    def _done(self, generation: int, result: ScanResult | None, error: Exception | None) -> None:
        if generation != self._generation:
            return  # a newer setting is being read
        self.scanning, self.result = False, result
        if isinstance(error, OSError):  # a folder that cannot be listed (permissions, a lost drive)
            error = UserError(f"The regularisation folder {self.folder()} cannot be read ({error.strerror or error}); "
                              "choose another or remove it.", code="regularization_not_found")
        elif error is not None and not isinstance(error, UserError):
            raise error
        self.error = error
        self.changed.emit()
