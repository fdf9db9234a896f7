"""New project asks for a name and a place and makes the folder; a folder with other files is refused."""

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from lora_studio.gui.main_window import MainWindow
from lora_studio.gui.new_project_dialog import NewProjectDialog

from dataset_helpers import isolated_settings, make_project  # noqa: F401 (fixture)


def _dialog(qtbot, **kw):
    dialog = NewProjectDialog(**kw)
    qtbot.addWidget(dialog)
    return dialog


def test_a_name_and_a_place_make_the_folder(qtbot, tmp_path, isolated_settings):
    dialog = _dialog(qtbot, name="Ink Wash", location=str(tmp_path))
    assert dialog.create_button.isEnabled()
    assert dialog.project_path() == tmp_path / "Ink Wash"
    assert f"Creates the folder {tmp_path / 'Ink Wash'}" in dialog.note.text()


def test_each_reason_it_cannot_is_one_sentence(qtbot, tmp_path, isolated_settings):
    (tmp_path / "Holiday").mkdir()
    (tmp_path / "Holiday" / "beach.jpg").write_bytes(b"x")
    make_project(tmp_path / "Old", 0)
    dialog = _dialog(qtbot, name="Holiday", location=str(tmp_path))
    cases = {
        "Holiday": "already holds other files; choose another name or place.",
        "Old": "is already a project; open it with Open project… instead",
        "": "Give the project a name.",
        "a/b": "A project name cannot contain any of",
    }
    for name, reason in cases.items():
        dialog.name.setText(name)
        assert reason in dialog.note.text() and not dialog.create_button.isEnabled(), name
        assert dialog.note.text().count(". ") == 0, dialog.note.text()  # one sentence
    dialog.name.setText("Fresh")
    dialog.location.setText(str(tmp_path / "nowhere"))
    assert dialog.note.text() == "Choose an existing folder to put the project in."
    dialog.accept()
    assert dialog.result() == 0  # Enter cannot get past the rule the button shows


def test_the_window_creates_the_project_the_form_names(qtbot, tmp_path, isolated_settings):
    w = MainWindow(find_models=False)
    qtbot.addWidget(w)
    w.show()

    def fill_in():
        dialog = QApplication.activeModalWidget()
        assert isinstance(dialog, NewProjectDialog)
        dialog.name.setText("Ink Wash")
        dialog.location.setText(str(tmp_path))
        dialog.create_button.click()

    QTimer.singleShot(0, fill_in)
    w.new_project_dialog()
    assert (tmp_path / "Ink Wash" / "lora_studio.toml").is_file()
    assert w.windowTitle() == "LoRA Studio — Ink Wash"
    # The next New project opens where this one went.
    assert _dialog(qtbot).location.text() == str(tmp_path)
    w.close()
