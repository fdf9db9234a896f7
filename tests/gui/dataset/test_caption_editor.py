from PySide6.QtCore import Qt
from PySide6.QtGui import QUndoStack

from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.gui.dataset.caption_editor import CaptionEditor, CaptionWriter

from dataset_helpers import make_images


def _editor(qtbot, tmp_path, **kw):
    make_images(tmp_path / "images", 2, **kw)
    items = scan(DatasetConfig(path=str(tmp_path / "images"))).items
    stack = QUndoStack()
    editor = CaptionEditor(stack, CaptionWriter())
    qtbot.addWidget(editor)
    editor.set_item(items[0])
    return editor, stack, items


def test_an_edit_writes_the_file_and_undo_redo_restore_it(qtbot, tmp_path):
    editor, stack, items = _editor(qtbot, tmp_path)
    txt = items[0].caption_path
    original = txt.read_bytes()
    assert editor.text.toPlainText() == "a picture, colour 0"
    editor.text.setPlainText("zzstyle, a red square")
    assert txt.read_bytes() == original  # not yet: written when the artist pauses
    with qtbot.waitSignal(editor.writer.written, timeout=3000):
        pass  # the typing pause elapses
    assert txt.read_text(encoding="utf-8") == "zzstyle, a red square\n"
    assert stack.count() == 1 and editor.state.text() == "Saved"
    stack.undo()
    assert txt.read_bytes() == original  # byte for byte
    assert editor.text.toPlainText() == "a picture, colour 0"
    stack.redo()
    assert txt.read_text(encoding="utf-8") == "zzstyle, a red square\n"
    assert editor.text.toPlainText() == "zzstyle, a red square"


def test_switching_images_commits_and_undo_removes_a_created_file(qtbot, tmp_path):
    editor, stack, items = _editor(qtbot, tmp_path, captions=False)
    txt = items[0].caption_path
    assert not txt.exists() and editor.state.text() == "No caption file yet."
    assert txt.name in editor.state.toolTip()  # the row is short; the tooltip says what typing does
    editor.text.setPlainText("first caption")
    editor.set_item(items[1])  # commits at once
    assert txt.read_text(encoding="utf-8") == "first caption\n"
    stack.undo()
    assert not txt.exists()


def test_enter_saves_and_ctrl_enter_moves_on(qtbot, tmp_path):
    editor, stack, items = _editor(qtbot, tmp_path)
    moves = []
    editor.next_requested.connect(moves.append)
    editor.text.setFocus()
    editor.text.selectAll()
    qtbot.keyClicks(editor.text, "new words")
    qtbot.keyClick(editor.text, Qt.Key.Key_Return)
    assert items[0].caption_path.read_text(encoding="utf-8") == "new words\n"
    assert "\n" not in editor.text.toPlainText()
    qtbot.keyClick(editor.text, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert moves == [1]


def test_token_count_warns_past_the_window(qtbot, tmp_path):
    editor, _stack, _items = _editor(qtbot, tmp_path)
    assert editor.tokens.text().startswith("5 / 75")
    editor.text.setPlainText(", ".join(f"tag{i}" for i in range(60)))
    assert "the rest is ignored" in editor.tokens.text()
    editor.set_item(None)
    assert not editor.text.isEnabled() and editor.title.text() == "No image selected"
