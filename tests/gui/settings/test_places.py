"""How the app names settings: by the labels on screen (the schema's), never by config keys."""

from lora_studio.core.config import KEYS, Config, validate
from lora_studio.core.errors import UserError
from lora_studio.gui.pages import TrainPage
from lora_studio.gui.settings.places import ADVANCED, DATASET_TAB, ESSENTIALS, say, say_error, say_problem, screen_name


def test_every_shown_key_is_in_the_schema_and_in_one_place():
    shown = list(ESSENTIALS) + [k for _, keys in ADVANCED for k in keys] + list(DATASET_TAB)
    assert len(shown) == len(set(shown))
    assert set(shown) <= set(KEYS)


def test_a_key_is_named_by_its_label_and_where_it_is():
    assert screen_name("dataset.min_bucket_side") == "“Smallest bucket side” (Advanced settings)"
    assert screen_name("train.resolution") == "“Resolution”"
    assert screen_name("dataset.path") == "“Image folder” (Dataset tab)"
    assert screen_name("train.compile") == "“Compile the model” (train.compile in the project's lora_studio.toml)"
    assert screen_name("config") == "config"


def test_say_writes_placeholders_and_spelled_keys_as_labels():
    error = UserError("No bucket fits; lower {dataset.min_bucket_side} or raise {train.resolution}.",
                      hint="Or set model.base to a bigger model.")
    assert error.message == "No bucket fits; lower dataset.min_bucket_side or raise train.resolution."  # the CLI's words
    assert say_error(error) == ("No bucket fits; lower “Smallest bucket side” (Advanced settings) or raise “Resolution”. "
                                "Or set “Base model” to a bigger model.")
    # The engine's events carry the CLI's words: the app renames the keys there too, but not inside paths.
    assert say(error.message) == "No bucket fits; lower “Smallest bucket side” (Advanced settings) or raise “Resolution”."
    assert say("/home/me/train.resolution/x and my_model.base") == "/home/me/train.resolution/x and my_model.base"


def test_problems_read_as_sentences_with_labels():
    problems = validate(Config().with_changes({"train.epochs": -1}))
    epochs = next(p for p in problems if p.key == "train.epochs")
    assert say_problem(epochs) == ("“Epochs” is -1; set it to 0 to train for “Steps” instead, "
                                   "or to the number of whole epochs to train (up to 100000).")
    assert "train." not in say_problem(epochs)


def test_the_train_tab_names_the_field_to_fix(qtbot):
    page = TrainPage()
    qtbot.addWidget(page)
    cfg = Config().with_changes({"model.base": "m", "dataset.path": "d", "output.dir": "o",
                                 "dataset.min_bucket_side": 2048, "dataset.max_bucket_side": 1024})
    page.set_ready(validate(cfg), "")
    text = page.ready_label.text()
    assert "“Smallest bucket side” (Advanced settings) is 2048, larger than “Largest bucket side” (Advanced settings) at 1024" in text
    assert "dataset." not in text
