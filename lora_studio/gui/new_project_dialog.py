"""New project: a name and a place, and the folder is made for it.

Asking for "an empty folder" let an artist pick a full one, and the project's files landed among theirs.
Here the project's folder is always one the app creates (or an empty one that is already there): the
line under the form says which folder that is, or in one sentence why it cannot be.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget,
)

from lora_studio.core.project import folder_is_free, is_project
from lora_studio.gui import dialog_dirs

BAD_NAME_CHARS = '/\\:*?"<>|'


def where_problem(name: str, location: str) -> str:
    """Why a project cannot be made at location/name, in one sentence; "" when it can."""
    name = name.strip()
    if not name:
        return "Give the project a name."
    if any(c in name for c in BAD_NAME_CHARS) or name in (".", ".."):
        return f"A project name cannot contain any of {' '.join(BAD_NAME_CHARS)}; choose another name."
    parent = Path(location.strip()).expanduser()
    if not location.strip() or not parent.is_dir():
        return "Choose an existing folder to put the project in."
    target = parent / name
    if is_project(target):
        return f"{target} is already a project; open it with Open project… instead, or choose another name."
    if target.exists() and not target.is_dir():
        return f"There is a file named {name} in that folder; choose another name."
    if not folder_is_free(target):
        return f"The folder {target} already holds other files; choose another name or place."
    return ""


class NewProjectDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, *, name: str = "My Style", location: str | None = None):
        super().__init__(parent)
        self.setWindowTitle("New project")
        self.setMinimumWidth(520)
        self.name = QLineEdit(name)
        self.name.setPlaceholderText("e.g. Ink Wash")
        self.location = QLineEdit(location if location is not None else dialog_dirs.start_dir("projects"))
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        where = QHBoxLayout()
        where.addWidget(self.location, 1)
        where.addWidget(browse)
        self.note = QLabel()
        self.note.setObjectName("muted")
        self.note.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.create_button = self.buttons.addButton("Create", QDialogButtonBox.ButtonRole.AcceptRole)
        self.create_button.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Put it in", where)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addWidget(self.buttons)
        self.name.textChanged.connect(self._check)
        self.location.textChanged.connect(self._check)
        self._check()

    def project_path(self) -> Path:
        return Path(self.location.text().strip()).expanduser() / self.name.text().strip()

    def _check(self) -> None:
        problem = where_problem(self.name.text(), self.location.text())
        self.note.setProperty("state", "blocked" if problem else "")
        self.note.setText(problem or f"Creates the folder {self.project_path()}, with an images folder for your pictures.")
        self.create_button.setEnabled(not problem)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Where should the project go?", dialog_dirs.start_dir("projects", self.location.text()))
        if folder:
            self.location.setText(str(Path(folder)))

    def accept(self) -> None:
        if where_problem(self.name.text(), self.location.text()):
            return  # Enter in a field: the button's state is the rule
        dialog_dirs.remember("projects", self.location.text().strip())
        super().accept()

    @classmethod
    def ask(cls, parent: QWidget | None = None) -> Path | None:
        """The new project's folder the artist settled on, or None when they cancelled."""
        dialog = cls(parent)
        return dialog.project_path() if dialog.exec() == QDialog.DialogCode.Accepted else None
