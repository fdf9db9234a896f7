"""Which GPU is there, and how much memory has it? Asked of the engine (`lora-studio device --json`) in a
child process, once per app session: the window never imports torch, and torch's own answer is the one a
run will get (the same CUDA build, the same device 0)."""

from __future__ import annotations

import atexit
import json
import sys

import shiboken6

from PySide6.QtCore import QCoreApplication, QObject, QProcess, Signal

TIMEOUT_MS = 120_000  # importing torch on a cold disk can take a while; the probe never blocks anything


class DeviceProbe(QObject):
    """`found` carries {"gpu", "total_bytes", "bf16", ...}, or {"gpu": "", "total_bytes": 0, "error": why}."""

    found = Signal(dict)
    _shared: "DeviceProbe | None" = None

    def __init__(self, parent: QObject | None = None, *, program: str | None = None, prefix_args: list[str] | None = None):
        super().__init__(parent)
        self.program = program or sys.executable
        self.prefix_args = ["-m", "lora_studio"] if prefix_args is None else list(prefix_args)
        self.result: dict | None = None
        self._process: QProcess | None = None

    @classmethod
    def shared(cls) -> "DeviceProbe":
        """One probe for the whole app: the GPU does not change while it runs."""
        if cls._shared is None:
            app = QCoreApplication.instance()
            cls._shared = cls(app)
            # Quitting while it still asks: end the child first (a QProcess destroyed running complains).
            app.aboutToQuit.connect(cls._shared.stop)
            atexit.register(cls._shared.stop)
        return cls._shared

    def stop(self) -> None:
        if self._process is not None and shiboken6.isValid(self._process) and self._process.state() != QProcess.ProcessState.NotRunning:
            self._process.kill()
            self._process.waitForFinished(2000)

    def start(self) -> None:
        """Ask once; later calls do nothing (connect to `found`, or read `result`)."""
        if self._process is not None or self.result is not None:
            return
        self._process = QProcess(self)
        self._process.finished.connect(self._finished)
        self._process.errorOccurred.connect(self._failed)
        self._process.start(self.program, [*self.prefix_args, "device", "--json"])
        self.startTimer(TIMEOUT_MS)

    def timerEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.killTimer(event.timerId())
        if self.result is None and self._process is not None:
            self._process.kill()
            self._publish({"gpu": "", "total_bytes": 0, "error": "the engine did not answer within two minutes"})

    def _finished(self, code: int, _status) -> None:
        if self.result is not None:
            return
        out = bytes(self._process.readAllStandardOutput()).decode("utf-8", "replace").strip().splitlines()
        try:
            info = json.loads(out[-1]) if code == 0 and out else None
        except ValueError:
            info = None
        if not isinstance(info, dict):
            err = bytes(self._process.readAllStandardError()).decode("utf-8", "replace").strip().splitlines()
            info = {"gpu": "", "total_bytes": 0, "error": err[-1] if err else f"the engine exited with code {code}"}
        self._publish(info)

    def _failed(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.result is None:
            self._publish({"gpu": "", "total_bytes": 0, "error": f"could not start {self.program}"})

    def _publish(self, info: dict) -> None:
        self.result = info
        self.found.emit(info)
