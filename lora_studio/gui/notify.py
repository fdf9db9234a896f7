"""Telling the artist that something long has ended while they look elsewhere: a tray message where the
desktop has a tray, and the taskbar's attention (QApplication.alert) on the window either way."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QStyle, QSystemTrayIcon, QWidget

SHOWN_MS = 10_000


class Notifier(QObject):
    shown = Signal(str, str, bool)  # title, message, failed: each notification as it is given

    def __init__(self, window: QWidget):
        super().__init__(window)
        self._window = window
        self._tray: QSystemTrayIcon | None = None

    def notify(self, title: str, message: str, *, failed: bool = False) -> None:
        if not self._window.isActiveWindow() and QSystemTrayIcon.isSystemTrayAvailable():
            tray = self._tray_icon()
            icon = QSystemTrayIcon.MessageIcon.Critical if failed else QSystemTrayIcon.MessageIcon.Information
            tray.showMessage(title, message, icon, SHOWN_MS)
        QApplication.alert(self._window)  # flashes the taskbar entry; nothing when the window is in front
        self.shown.emit(title, message, failed)

    def _tray_icon(self) -> QSystemTrayIcon:
        if self._tray is None:
            icon = self._window.windowIcon()
            if icon.isNull():  # a tray entry without an icon is not shown at all
                icon = self._window.style().standardIcon(QStyle.StandardPixmap.SP_ComputerIcon)
            self._tray = QSystemTrayIcon(icon, self)
            self._tray.setToolTip(self._window.windowTitle())
            self._tray.messageClicked.connect(self._bring_back)
            self._tray.activated.connect(lambda _reason: self._bring_back())
        self._tray.show()
        return self._tray

    def _bring_back(self) -> None:
        self._window.showNormal()
        self._window.raise_()
        self._window.activateWindow()
