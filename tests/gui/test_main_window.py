import tomllib

from PySide6.QtCore import QSettings

from lora_studio.core.project import recent_projects
from lora_studio.gui.main_window import MainWindow

from dataset_helpers import isolated_settings, make_base_model, make_images, make_project  # noqa: F401 (fixture)


def _base_model(tmp_path):
    return make_base_model(tmp_path)


def _window(qtbot):
    w = MainWindow(find_models=False)
    qtbot.addWidget(w)
    w.show()
    return w


def _opened(qtbot, w, project):
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.model.rowCount() > 0, timeout=5000)


def test_opens_with_the_title_and_a_welcome_page(qtbot, isolated_settings):
    w = _window(qtbot)
    assert w.windowTitle() == "LoRA Studio"
    assert w.pages.currentWidget() is w.welcome
    assert not w.close_action.isEnabled()
    w.close()


def test_open_project_shows_its_images_and_remembers_it(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "Ink Wash", 5)
    w = _window(qtbot)
    _opened(qtbot, w, project)
    assert w.windowTitle() == "LoRA Studio — Ink Wash"
    assert w.pages.currentWidget() is w.tabs and w.model.rowCount() == 5
    assert recent_projects() == [project.root]
    qtbot.waitUntil(lambda: w.caption_editor.item() is not None, timeout=3000)  # the first image is selected
    assert w.caption_editor.text.toPlainText() == "a picture, colour 0"
    qtbot.waitUntil(lambda: w.model.has_thumbnail(0), timeout=5000)
    assert list(project.thumbs_dir.glob("*.png"))  # cached in the project
    w.close()


def test_a_settings_edit_saves_the_toml_and_updates_the_budget(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 4)
    w = _window(qtbot)
    _opened(qtbot, w, project)
    qtbot.waitUntil(lambda: "4 images" in w.settings_panel.budget.text(), timeout=3000)
    assert "1,500 steps at batch 2" in w.settings_panel.budget.text()
    w.settings_panel.steps.setValue(400)
    with qtbot.waitSignal(w.store.saved, timeout=3000):
        pass
    assert tomllib.loads(project.config_path.read_text())["train"]["max_steps"] == 400
    assert w.settings_panel.budget.text() == "4 images × 1 repeat × 200 epochs = 800 samples = 400 steps at batch 2."
    assert "Before training" in w.ready_label.text()  # no base model yet
    w.store.set("model.base", str(_base_model(tmp_path)))
    assert "Ready to train" in w.ready_label.text() and "400 steps" in w.ready_label.text()
    w.close()


def test_a_run_config_is_written_into_a_fresh_run_dir(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 2, base_model=str(_base_model(tmp_path)))
    w = _window(qtbot)
    _opened(qtbot, w, project)
    w.store.set("train.max_steps", 77)
    run = w._make_run()  # what the run panel calls on Start
    assert run.path.parent == project.runs_dir
    data = tomllib.loads(run.config.read_text())
    assert data["train"]["max_steps"] == 77 and data["output"]["dir"] == str(run.path)
    assert tomllib.loads(project.config_path.read_text())["train"]["max_steps"] == 77  # flushed first
    panel = w.ensure_train_page()
    assert panel is w.run_panel and w.run_history is not None
    w.close()



def test_a_fix_accepted_in_the_train_tab_reaches_the_project_settings(qtbot, tmp_path, isolated_settings):
    # "Apply and resume" after running out of memory: the next run from this project must fit as well.
    project = make_project(tmp_path / "p", 2)
    w = _window(qtbot)
    _opened(qtbot, w, project)
    panel = w.ensure_train_page()
    panel.fix_applied.emit({"train.batch_size": 1, "train.gradient_accumulation": 2})
    assert w.settings_panel.batch_size.value() == 1
    assert w.statusBar().currentMessage() == (  # the settings by their labels, not their keys
        "Changed “Batch size” to 1, “Gradient accumulation” (Advanced settings) to 2 in the project's settings.")
    w.store.flush()
    train = tomllib.loads(project.config_path.read_text())["train"]
    assert (train["batch_size"], train["gradient_accumulation"]) == (1, 2)
    w.close()


def test_the_ready_line_warns_when_the_estimate_says_it_will_not_fit(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 2, base_model=str(_base_model(tmp_path)))
    w = _window(qtbot)
    _opened(qtbot, w, project)
    for key, value in {"model.kind": "sdxl", "train.resolution": 1024, "train.batch_size": 4,
                       "train.gradient_checkpointing": False, "train.mixed_precision": "bf16", "train.base_weights": "bf16"}.items():
        w.store.set(key, value)
    w.settings_panel.memory.set_device({"gpu": "Test GPU 8GB", "total_bytes": 8_000_000_000})  # what the engine would say
    assert "Ready to train" in w.ready_label.text() and "do not fit the GPU" in w.ready_label.text()
    w.settings_panel.memory.apply_fix()
    assert "Ready to train" in w.ready_label.text() and "do not fit" not in w.ready_label.text()
    w.close()

def test_window_undo_commits_the_typing_first(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 2)
    w = _window(qtbot)
    _opened(qtbot, w, project)
    qtbot.waitUntil(lambda: w.caption_editor.item() is not None, timeout=3000)
    txt = project.images_dir / "img000.txt"
    original = txt.read_bytes()
    w.caption_editor.text.setPlainText("typed but not yet saved")
    w.undo()  # writes the typing as one step, then takes it back
    assert txt.read_bytes() == original
    w.redo()
    assert txt.read_text(encoding="utf-8") == "typed but not yet saved\n"
    assert w.model.item(0).caption == "typed but not yet saved"
    w.close()


def test_health_findings_and_a_one_click_fix(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 3)
    (project.images_dir / "img002.txt").unlink()
    broken = project.images_dir / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    w = _window(qtbot)
    w.store.set("train.resolution", 64)  # the test images are small on purpose
    _opened(qtbot, w, project)
    qtbot.waitUntil(lambda: any(f.kind == "unreadable" for f in w.health.findings), timeout=10_000)
    finding = next(f for f in w.health.findings if f.kind == "unreadable")
    w.health.fix(finding)
    assert "broken.png" in w.store.get("dataset.exclude")
    assert broken.read_bytes().startswith(b"\x89PNG")  # the file is not touched
    w.undo()
    assert "broken.png" not in w.store.get("dataset.exclude")
    # Typing the missing caption settles that finding without a new check.
    assert any(f.kind == "missing_caption" for f in w.health.findings)
    w.dataset_view.select_path(project.images_dir / "img002.png")
    w.caption_editor.text.setPlainText("a caption at last")
    w.caption_editor.commit()
    assert not any(f.kind == "missing_caption" for f in w.health.findings)
    w.close()


def test_the_first_window_fits_the_screen(qtbot, isolated_settings):
    w = _window(qtbot)  # no saved geometry: the default size
    room = w.screen().availableGeometry()
    expected = (min(1320, int(room.width() * 0.95)), min(840, int(room.height() * 0.95)))
    assert (w.width(), w.height()) == (max(expected[0], w.minimumSizeHint().width()), max(expected[1], w.minimumSizeHint().height()))
    w.close()


def test_layout_is_remembered(qtbot, tmp_path, isolated_settings):
    w = _window(qtbot)
    w.resize(1000, 700)
    w.tabs.setCurrentIndex(1)
    w.close()
    assert QSettings().value("main/geometry") is not None
    w2 = _window(qtbot)
    # (The offscreen platform may nudge the width to the minimum; the default would be 1320 × 840.)
    assert w2.height() == 700 and w2.width() <= 1000 and w2.tabs.currentIndex() == 1
    w2.close()


def test_new_project_and_dropping_onto_the_window(qtbot, tmp_path, isolated_settings):
    from dataset_helpers import drop

    w = _window(qtbot)
    assert w.new_project(tmp_path / "Fresh")
    assert (tmp_path / "Fresh" / "lora_studio.toml").is_file()
    assert w.dataset_view.stack.currentWidget() is w.dataset_view.empty
    art = make_images(tmp_path / "art", 3)
    QSettings().setValue("dataset/drop_choice", "copy")
    drop(w, art)
    qtbot.waitUntil(lambda: w.model.rowCount() == 3, timeout=5000)
    assert "Copied 3 images" in w.dataset_view.drop_bar.label.text()
    assert sorted(p.name for p in (tmp_path / "Fresh" / "images").glob("*.png")) == [p.name for p in art]
    w.close()
