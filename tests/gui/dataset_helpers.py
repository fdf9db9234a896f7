"""Real little datasets for the GUI tests: PNG files made with Pillow, .txt captions beside them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from lora_studio.core.project import Project, create_project

COLOURS = [(200, 60, 60), (60, 160, 80), (60, 90, 200), (220, 180, 40), (150, 70, 170), (40, 170, 170)]


def make_images(folder: Path, n: int, *, captions: bool = True, size: tuple[int, int] = (96, 64), prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = Image.new("RGB", size, COLOURS[i % len(COLOURS)])
        # A distinct stripe per image, so no two are duplicates to the dataset doctor.
        for x in range(size[0]):
            img.putpixel((x, (i * 7) % size[1]), (255, 255, 255))
        path = folder / f"{prefix}{i:03d}.png"
        img.save(path)
        if captions:
            path.with_suffix(".txt").write_text(f"a picture, colour {i % len(COLOURS)}\n", encoding="utf-8")
        paths.append(path)
    return paths


def make_base_model(folder: Path) -> Path:
    """A readable .safetensors with no tensors: the ready line (and Start) check that the base model is
    there and is not a LoRA, so a made-up path would (rightly) not be ready; with no tensors to count, the
    memory estimate takes the standard size of model.kind, as for a file it cannot read."""
    import json
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.safetensors"
    header = json.dumps({"__metadata__": {}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def make_project(root: Path, n: int = 6, *, captions: bool = True, base_model: str = "") -> Project:
    project = create_project(root, base_model=base_model)
    make_images(project.images_dir, n, captions=captions)
    return project


@pytest.fixture
def isolated_settings(tmp_path, monkeypatch):
    """QSettings and the recent-projects list in tmp_path, never the artist's real ones."""
    from PySide6.QtCore import QCoreApplication, QSettings

    QCoreApplication.setOrganizationName("LoRA Studio Tests")
    QCoreApplication.setApplicationName("LoRA Studio Tests")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    monkeypatch.setenv("LORA_STUDIO_CONFIG_DIR", str(tmp_path / "appconfig"))
    monkeypatch.setenv("LORA_STUDIO_SEARCH_HOME", str(tmp_path / "home"))
    QSettings().clear()
    yield tmp_path / "qsettings"


def drop(widget, paths):
    """Drop files onto a widget as a file manager would: a drag-enter it must accept, then the drop."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    event = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)
    return event
