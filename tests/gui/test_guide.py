"""Help → User guide shows the shipped guide; Help → About says the version."""

from __future__ import annotations

from lora_studio import __version__
from lora_studio.gui.guide import about_text
from lora_studio.gui.main_window import MainWindow

from dataset_helpers import isolated_settings  # noqa: F401 (fixture)


def test_the_help_menu_opens_the_user_guide_and_says_the_version(qtbot, isolated_settings):
    w = MainWindow(find_models=False)
    qtbot.addWidget(w)
    help_menu = w.menuBar().actions()[-1].menu()
    assert [a.text() for a in help_menu.actions()] == ["&User guide", "About LoRA Studio"]
    assert w.guide_action.shortcut().toString() == "F1"
    dialog = w.show_guide()
    qtbot.addWidget(dialog)
    text = dialog.browser.toPlainText()
    # The guide walks through the tabs the artist sees, by their names.
    for words in ("Dataset", "Settings", "Train", "Compare", "Export", "trigger word", "lora-studio demo"):
        assert words in text, words
    assert f"LoRA Studio {__version__}" in about_text()
