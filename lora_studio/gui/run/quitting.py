"""Closing the window while a run trains: by default the run is stopped the way Stop does it (the step
finished, a checkpoint and the LoRA saved) and the window closes when the engine says it has finished;
quitting without saving is the explicit second choice, and Cancel keeps training."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from lora_studio.gui.run.panel import RunPanel

STOP_AND_QUIT = "Stop, save and quit"
QUIT_NOW = "Quit without saving"


class QuitGuard(QObject):
    def __init__(self, window: QWidget, panel: RunPanel):
        super().__init__(window)
        self._window, self._panel = window, panel
        self._quit_now = False  # the artist chose to lose the steps since the last checkpoint
        self._closing_after_run = False
        self.box: QMessageBox | None = None
        panel.run_finished.connect(self._run_ended)

    def allow_close(self) -> bool:
        """True when the window may close now; otherwise the artist is asked, and the window closes later
        (once the run has stopped and saved) or not at all."""
        if self._quit_now or not self._panel.is_training():
            return True
        self._ask()
        return False

    @property
    def closing_after_run(self) -> bool:
        return self._closing_after_run

    def _ask(self) -> None:
        if self.box is not None and self.box.isVisible():
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Training is running",
                          "Training is running. Stop it and save before quitting?", parent=self._window)
        box.setInformativeText(
            f"“{STOP_AND_QUIT}” finishes the current step, saves a checkpoint and the LoRA file, then closes "
            "(this can take up to a minute): Resume continues from there next time.\n\n"
            f"“{QUIT_NOW}” ends training at once: every step since the last checkpoint is lost.")
        stop = box.addButton(STOP_AND_QUIT, QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QUIT_NOW, QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(stop)
        box.setEscapeButton(cancel)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.buttonClicked.connect(self._chosen)
        self.box = box
        box.open()

    def _chosen(self, button) -> None:
        text = button.text()
        if text == STOP_AND_QUIT:
            self._closing_after_run = True
            if not self._panel.runner.is_stopping():  # a second Stop would end it without saving
                self._panel.stop()
            self._panel.run.say("Stopping: saving a checkpoint and the LoRA, then LoRA Studio closes…")
        elif text == QUIT_NOW:
            self._quit_now = True
            self._panel.shutdown()
            self._window.close()

    def _run_ended(self, *_args) -> None:
        if self._closing_after_run:
            self._window.close()
