"""Where a file dialog opens: the folder last used for the same purpose, else a sensible place.

Qt's static file dialogs, given no folder, open wherever any dialog of the app last was — after an
export that is the last run's folder, the wrong place to look for images or models. So every dialog
names its purpose ("images", "models", "projects") and opens where that purpose was last used.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

_FALLBACKS = {
    "images": QStandardPaths.StandardLocation.PicturesLocation,
    "models": QStandardPaths.StandardLocation.HomeLocation,
    "projects": QStandardPaths.StandardLocation.DocumentsLocation,
}


def start_dir(purpose: str, near: str | Path | None = None) -> str:
    """The folder a `purpose` dialog opens in: the folder of `near` (the current value) when it exists,
    else the last folder chosen for this purpose, else the user's Pictures / home / Documents folder."""
    for candidate in (near, QSettings().value(f"dialogs/{purpose}", "")):
        if candidate:
            path = Path(str(candidate)).expanduser()
            folder = path if path.is_dir() else path.parent
            if folder.is_dir() and str(folder) not in ("", "."):
                return str(folder)
    fallback = QStandardPaths.writableLocation(_FALLBACKS.get(purpose, QStandardPaths.StandardLocation.HomeLocation))
    return fallback if fallback and Path(fallback).is_dir() else str(Path.home())


def remember(purpose: str, chosen: str | Path) -> None:
    """Note the folder of what was chosen, so the next dialog for this purpose opens there."""
    path = Path(chosen)
    QSettings().setValue(f"dialogs/{purpose}", str(path if path.is_dir() else path.parent))
