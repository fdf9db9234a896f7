"""The health panel's one-click caption fixes: a Windows-1252 caption re-saved as UTF-8, the trigger word
added where it is missing; each one undo step, the grid told, the images never touched."""

from __future__ import annotations

from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QPushButton

from lora_studio.gui.dataset.bulk_actions import BulkActions
from lora_studio.gui.dataset.caption_editor import CaptionWriter
from lora_studio.gui.dataset.health_panel import HealthPanel
from lora_studio.gui.store import ConfigStore

from dataset_helpers import isolated_settings, make_project  # noqa: F401 (fixture)


def _panel(qtbot, tmp_path, n=3):
    project = make_project(tmp_path / "p", n)
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    store.set("train.resolution", 64)  # the test images are small on purpose
    undo, writer = QUndoStack(), CaptionWriter()
    panel = HealthPanel(store, undo, writer, BulkActions(undo, writer, store, lambda: []))
    qtbot.addWidget(panel)
    panel.show()
    return project, store, undo, writer, panel


def _checked(qtbot, panel):
    with qtbot.waitSignal(panel.checked, timeout=10_000):
        panel.check()


def _button(panel, label):
    return next(b for b in panel.list.findChildren(QPushButton) if b.text() == label)


def test_a_windows_1252_caption_is_shown_and_resaved_as_utf8_on_one_click(qtbot, tmp_path, isolated_settings):
    project, store, undo, writer, panel = _panel(qtbot, tmp_path)
    caption = project.images_dir / "img001.txt"
    caption.write_bytes("zkstyle, café crème".encode("cp1252"))
    _checked(qtbot, panel)
    (finding,) = [f for f in panel.findings if f.kind == "not_utf8"]
    assert '"zkstyle, café crème"' in finding.message
    written = []
    writer.written.connect(lambda image, text: written.append((image.name, text)))
    _button(panel, "Re-save as UTF-8").click()
    assert caption.read_bytes() == "zkstyle, café crème\n".encode("utf-8")
    assert written == [("img001.png", "zkstyle, café crème")]  # the grid and the editor hear of it
    assert not [f for f in panel.findings if f.kind == "not_utf8"]
    undo.undo()
    assert caption.read_bytes() == "zkstyle, café crème".encode("cp1252")


def test_the_trigger_word_is_checked_and_added_in_one_step(qtbot, tmp_path, isolated_settings):
    project, store, undo, writer, panel = _panel(qtbot, tmp_path)
    _checked(qtbot, panel)
    assert not [f for f in panel.findings if f.kind == "trigger_missing"]  # no trigger word yet
    assert panel.summary.text().startswith("Everything looks good")
    store.set("output.trigger", "zkstyle")  # typed in Settings: checked against the captions at once
    qtbot.waitUntil(lambda: any(f.kind == "trigger_missing" for f in panel.findings), timeout=5000)
    assert "is in none of the 3 captions" in panel.findings[0].message
    assert "1 thing to look at" in panel.summary.text()
    before = {p: p.read_bytes() for p in project.images_dir.glob("*.png")}
    _button(panel, "Add trigger word").click()
    captions = sorted(project.images_dir.glob("*.txt"))
    assert all(p.read_text(encoding="utf-8").startswith("zkstyle, a picture") for p in captions)
    assert {p: p.read_bytes() for p in project.images_dir.glob("*.png")} == before
    assert panel.summary.text().startswith("Everything looks good")
    assert undo.count() == 1 and undo.undoText() == "Fix 3 captions"
    undo.undo()
    assert not any("zkstyle" in p.read_text(encoding="utf-8") for p in captions)


def test_leave_out_buttons_are_not_under_the_scroll_bar(qtbot, tmp_path):
    project = make_project(tmp_path / "p", 2)
    for i in range(20):
        (project.images_dir / f"notes{i:02d}.png").write_text("not a picture")
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    stack, writer = QUndoStack(), CaptionWriter()
    panel = HealthPanel(store, stack, writer, BulkActions(stack, writer, store, lambda: []))
    qtbot.addWidget(panel)
    panel.resize(420, 300)  # far too short for 20 rows: the list scrolls
    panel.show()
    qtbot.waitExposed(panel)
    panel.check()
    qtbot.waitUntil(lambda: len(panel.findings) >= 20, timeout=10_000)
    qtbot.waitUntil(lambda: panel.list.verticalScrollBar().isVisible(), timeout=2000)
    qtbot.wait(20)
    viewport = panel.list.viewport()
    buttons = [b for b in panel.list.findChildren(QPushButton) if b.text() == "Leave out"]
    assert len(buttons) >= 20
    for b in buttons:
        right = b.mapTo(viewport, b.rect().topRight()).x()
        assert right < viewport.width(), (right, viewport.width())
