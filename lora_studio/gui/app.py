"""`run_app(project)`: the QApplication, its look, and the main window.

Nothing here imports the engine (torch): the window opens in well under a second or two, and holds
no GPU memory. With no project given, the last one opened is reopened, as most editors do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QLinearGradient, QPainter, QPainterPath, QPalette, QPixmap
from PySide6.QtWidgets import QApplication

from lora_studio.core.project import APP_NAME, recent_projects
from lora_studio.gui.tasks import wait_for_background

ORGANIZATION = "LoRA Studio"

STYLE = """
QLabel#heading { font-size: 11pt; font-weight: 600; }
QLabel#muted { color: #9aa0a8; }
QLabel#problem { color: #ff8a80; }
QLabel[warn="true"] { color: #ffb74d; }
QLabel#budget { color: #dfe5ff; background: #26304d; border-radius: 6px; padding: 6px 9px; }
QLabel#memory { border-radius: 6px; padding: 6px 9px; background: #24272c; color: #c4c8ce; }
QLabel#memory[verdict="fits"] { background: #203326; color: #c9f0d3; }
QLabel#memory[verdict="tight"], QLabel#memory[verdict="cpu"] { background: #3a3320; color: #ffe3a3; }
QLabel#memory[verdict="does_not_fit"] { background: #3a2323; color: #ffc9c2; }
QLabel#preview { background: #17191c; border-radius: 8px; color: #80868e; }
QLabel#welcomeTitle { font-size: 30pt; font-weight: 700; }
QLabel#emptyTitle { font-size: 18pt; font-weight: 600; }
QLabel#sev_error { color: #ff6b6b; }
QLabel#sev_warn { color: #ffb74d; }
QLabel#sev_info { color: #64b5f6; }
QLabel#readyLine { border-radius: 6px; padding: 8px 10px; }
QLabel#readyLine[state="ready"] { background: #203326; color: #c9f0d3; }
QLabel#readyLine[state="blocked"] { background: #3a2b20; color: #ffd9b8; }
QLabel#readyLine[state="warn"] { background: #3a3320; color: #ffe3a3; }
QLabel#readyLine a { color: #8ab4ff; }
QFrame#emptyState { border: 2px dashed #4a4f58; border-radius: 14px; background: #1e2024; }
QFrame#regSection { border: 1px solid #33363c; border-radius: 8px; }
QFrame#dropBar { border-radius: 6px; }
QFrame#dropBar[kind="question"] { background: #27345a; border: 1px solid #4a64a8; }
QFrame#dropBar[kind="info"] { background: #203326; border: 1px solid #3d6b4c; }
QPushButton#primary { background: #3d6df2; color: white; border: 1px solid #3d6df2; border-radius: 5px;
                      padding: 6px 16px; font-weight: 600; }
QPushButton#primary:hover { background: #5480f5; }
QPushButton#flat { border: none; background: transparent; color: #c4c8ce; padding: 4px 8px; }
QPushButton#fixButton { padding: 3px 10px; }
QTabWidget#mainTabs::pane { border: none; }
QTabBar::tab { padding: 8px 22px; font-weight: 600; }
QGroupBox { font-weight: 600; border: 1px solid #3a3e46; border-radius: 8px; margin-top: 16px; padding: 14px 10px 8px 10px; }
QGroupBox::title { subcontrol-origin: margin; left: 12px; padding: 0 4px; }
QToolButton#disclosure { border: none; font-weight: 600; padding: 4px 0; }
QListView#grid, QListWidget#findings, QListWidget#recentList { border: 1px solid #33363c; border-radius: 8px; }
QListWidget#recentList::item { padding: 8px; }
"""


def _palette() -> QPalette:
    """A calm dark palette: images read better on dark grey, as in every photo and paint tool."""
    p = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#222428", QPalette.ColorRole.WindowText: "#e4e6ea",
        QPalette.ColorRole.Base: "#1b1d20", QPalette.ColorRole.AlternateBase: "#25282d",
        QPalette.ColorRole.ToolTipBase: "#2c3036", QPalette.ColorRole.ToolTipText: "#e4e6ea",
        QPalette.ColorRole.Text: "#e4e6ea", QPalette.ColorRole.PlaceholderText: "#7d838c",
        QPalette.ColorRole.Button: "#2f3238", QPalette.ColorRole.ButtonText: "#e4e6ea",
        QPalette.ColorRole.BrightText: "#ff6b6b", QPalette.ColorRole.Highlight: "#3d6df2",
        QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.Link: "#8ab4ff",
        QPalette.ColorRole.Light: "#3a3e45", QPalette.ColorRole.Midlight: "#30343a",
        QPalette.ColorRole.Mid: "#2a2d32", QPalette.ColorRole.Dark: "#17191c", QPalette.ColorRole.Shadow: "#000000",
    }
    for role, colour in colours.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b7078"))
    return p


def app_icon() -> QIcon:
    """Drawn, not shipped: a gradient tile with a brush-stroke L."""
    icon = QIcon()
    for size in (16, 32, 64, 128, 256):
        px = QPixmap(size, size)
        px.fill(Qt.GlobalColor.transparent)
        p = QPainter(px)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        g = QLinearGradient(0, 0, size, size)
        g.setColorAt(0, QColor("#7b5cff"))
        g.setColorAt(1, QColor("#2fb7ff"))
        p.setBrush(g)
        p.setPen(Qt.PenStyle.NoPen)
        p.drawRoundedRect(QRectF(0, 0, size, size), size * 0.22, size * 0.22)
        path = QPainterPath()
        s = size / 100
        path.addRoundedRect(QRectF(30 * s, 20 * s, 14 * s, 60 * s), 7 * s, 7 * s)
        path.addRoundedRect(QRectF(30 * s, 66 * s, 42 * s, 14 * s), 7 * s, 7 * s)
        p.setBrush(QColor("white"))
        p.drawPath(path.simplified())
        p.end()
        icon.addPixmap(px)
    return icon


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        # Set before the QApplication exists, so QSettings and the platform theme see them.
        QApplication.setApplicationName(APP_NAME)
        QApplication.setOrganizationName(ORGANIZATION)
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORGANIZATION)
    app.setStyle("Fusion")
    app.setPalette(_palette())
    font = app.font()
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
        app.setFont(font)
    app.setStyleSheet(STYLE)
    app.setWindowIcon(app_icon())
    return app


def make_window(project: Path | None):
    from lora_studio.gui.main_window import MainWindow

    window = MainWindow()
    if project is not None:
        window.open_project(project)
    else:
        recent = recent_projects()
        if recent:
            window.open_project(recent[0])
    return window


def run_app(project: Path | None = None) -> int:
    app = make_app()
    window = make_window(Path(project) if project is not None else None)
    window.show()
    code = app.exec()
    # Let a thumbnail or a cancelled check finish its current image, so the process exits cleanly.
    wait_for_background(3000)
    return code

