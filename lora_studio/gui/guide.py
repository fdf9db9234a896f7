"""Help → User guide (the shipped resources/guide.md, rendered) and Help → About (the version)."""

from __future__ import annotations

import platform

from PySide6 import __version__ as pyside_version
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QMessageBox, QTextBrowser, QVBoxLayout, QWidget

from lora_studio import __version__
from lora_studio.core.resources import resource


def guide_text() -> str:
    try:
        return resource("guide.md").read_text(encoding="utf-8")
    except OSError:
        return "The user guide is missing from this installation: reinstall LoRA Studio to get it back."


class GuideDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("LoRA Studio — User guide")
        self.browser = QTextBrowser(self)
        self.browser.setOpenExternalLinks(True)
        self.browser.setMarkdown(guide_text())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser, 1)
        layout.addWidget(buttons)
        self.resize(640, 640)


def about_text() -> str:
    return (f"<b>LoRA Studio {__version__}</b><br>Train image-style LoRAs for Stable Diffusion on your own GPU, "
            f"offline.<br><br>Python {platform.python_version()} · Qt for Python {pyside_version}<br>"
            "Help → User guide explains the four steps: dataset, settings, train, compare and export.")


def show_about(parent: QWidget) -> None:
    QMessageBox.about(parent, "About LoRA Studio", about_text())
