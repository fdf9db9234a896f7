"""The Settings tab's memory line: will these settings fit on this GPU? The same estimate and wording as
`lora-studio train --dry-run` (core/fit_advice), with the nearest settings that fit one click away."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from lora_studio.core.fit_advice import MemorySummary, memory_summary
from lora_studio.gui.device_probe import DeviceProbe
from lora_studio.gui.settings.fields import reserve_lines
from lora_studio.gui.store import ConfigStore

# Only these keys change the estimate (or which model it is for).
MEMORY_KEYS = {
    "", "model.base", "model.kind", "network.rank", "network.targets", "network.train_text_encoder",
    "train.resolution", "train.batch_size", "train.mixed_precision", "train.base_weights",
    "train.gradient_checkpointing", "train.cache_latents", "train.cache_text_encoder", "train.optimizer",
}


class MemoryLine(QWidget):
    summary_changed = Signal(object)  # the new MemorySummary (the Train tab's ready line repeats a "does not fit")

    def __init__(self, store: ConfigStore, parent: QWidget | None = None, *, probe: DeviceProbe | None = None):
        super().__init__(parent)
        self.store = store
        self.device: dict | None = None
        self.summary: MemorySummary | None = None
        self.label = QLabel("Checking the GPU…", self)
        self.label.setObjectName("memory")
        self.label.setWordWrap(True)
        reserve_lines(self.label)  # a verdict of one line or two: the fields below stay put
        self.fix_button = QPushButton("Use these settings", self, clicked=self.apply_fix)
        self.fix_button.setToolTip("Change the settings to the nearest ones that fit this GPU")
        self.fix_button.hide()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.fix_button)
        # Reading a model file's header on every keystroke is wasteful: settle first.
        self._timer = QTimer(self, singleShot=True, interval=150, timeout=self.refresh)
        store.changed.connect(lambda key: self._timer.start() if key in MEMORY_KEYS else None)
        self._probe = probe
        if probe is not None:
            self._listen(probe)

    def ask_about_the_gpu(self) -> None:
        """Start the (app-wide, once) question to the engine; the line updates when it answers."""
        if self._probe is None:
            self._listen(DeviceProbe.shared())
        self._probe.start()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.ask_about_the_gpu()  # the window asks soon after it opens; this covers a panel shown on its own
        super().showEvent(event)

    def _listen(self, probe: DeviceProbe) -> None:
        self._probe = probe
        probe.found.connect(self.set_device)
        if probe.result is not None:
            self.set_device(probe.result)

    def set_device(self, info: dict) -> None:
        self.device = dict(info)
        self.refresh()

    def refresh(self) -> None:
        if self.device is None:
            return
        total, name = int(self.device.get("total_bytes") or 0), self.device.get("gpu", "")
        try:
            self.summary = memory_summary(self.store.config, total, name)
        except ValueError:  # a hand-edited project file with a value the estimate does not know
            self.summary = MemorySummary("The memory estimate needs valid settings: fix the ones marked in red.", "unknown")
        text = self.summary.text
        if self.device.get("error") and not total:
            text = f"Could not ask the engine about the GPU ({self.device['error']}). {text}"
        self.label.setText(text)
        self.label.setProperty("verdict", self.summary.verdict)
        self.label.style().unpolish(self.label)
        self.label.style().polish(self.label)
        self.fix_button.setVisible(self.summary.fix is not None)
        self.summary_changed.emit(self.summary)

    def apply_fix(self) -> None:
        if self.summary is None or self.summary.fix is None:
            return
        for key, value in self.summary.fix[1].items():
            self.store.set(key, value)
        self.refresh()
