"""Where the artist left the window: its geometry, dock state, splitters and tab, kept in QSettings."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMainWindow, QSplitter, QTabWidget

DEFAULT_SIZE = (1320, 840)


def _state(settings: QSettings, key: str) -> QByteArray | None:
    value = settings.value(key)
    return value if isinstance(value, QByteArray) and not value.isEmpty() else None


def default_size(window: QMainWindow) -> tuple[int, int]:
    """1320 × 840, or less on a smaller screen: a 1366 × 768 laptop must see the whole window, buttons at
    the right edge and the log at the bottom included."""
    screen = window.screen() or QGuiApplication.primaryScreen()
    if screen is None:
        return DEFAULT_SIZE
    room = screen.availableGeometry()
    return min(DEFAULT_SIZE[0], int(room.width() * 0.95)), min(DEFAULT_SIZE[1], int(room.height() * 0.95))


def restore(window: QMainWindow, splitters: dict[str, QSplitter], tabs: QTabWidget) -> None:
    s = QSettings()
    geometry = _state(s, "main/geometry")
    if geometry is not None:
        window.restoreGeometry(geometry)
    else:
        window.resize(*default_size(window))
    for key, splitter in splitters.items():
        state = _state(s, f"main/{key}")
        if state is not None:
            splitter.restoreState(state)
    state = _state(s, "main/state")
    if state is not None:
        window.restoreState(state)
    tabs.setCurrentIndex(int(s.value("main/tab", 0)))


def save(window: QMainWindow, splitters: dict[str, QSplitter], tabs: QTabWidget) -> None:
    s = QSettings()
    s.setValue("main/geometry", window.saveGeometry())
    s.setValue("main/state", window.saveState())
    for key, splitter in splitters.items():
        s.setValue(f"main/{key}", splitter.saveState())
    s.setValue("main/tab", tabs.currentIndex())
