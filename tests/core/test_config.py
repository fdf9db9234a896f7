import pytest

from lora_studio.core import config as config_mod
from lora_studio.core.config import Config, validate
from lora_studio.core.errors import ConfigError


def _valid(**train) -> Config:
    return Config().replace(model={"base": "m"}, dataset={"path": "d"}, output={"dir": "o"}, train=train)


def test_epochs_default_to_off_and_round_trip(tmp_path):
    assert Config().train.epochs == 0 and validate(_valid()) == []
    config_mod.save(_valid(epochs=10), tmp_path / "c.toml")
    assert "epochs = 10" in (tmp_path / "c.toml").read_text()
    assert config_mod.load(tmp_path / "c.toml").train.epochs == 10


def test_negative_epochs_name_the_key_and_the_fix():
    (problem,) = validate(_valid(epochs=-3))
    assert str(problem) == (
        "train.epochs is -3; set it to 0 to train for train.max_steps instead, "
        "or to the number of whole epochs to train (up to 100000)."
    )
    with pytest.raises(ConfigError):
        config_mod.from_dict({"train": {"epochs": -1}, "model": {"base": "m"}, "dataset": {"path": "d"}, "output": {"dir": "o"}})


# --- the schema's metadata: one owner of labels, help and ranges ------------------------------------

def test_every_key_has_a_label_help_and_a_valid_default():
    assert len(config_mod.KEYS) > 60
    for key, info in config_mod.KEYS.items():
        assert info.label and info.help, key
        if info.choices:
            assert info.default in info.choices, key
        if info.min is not None:
            assert info.min <= info.default <= info.max, key
    assert config_mod.CHOICES["train.optimizer"] == config_mod.key_info("train.optimizer").choices
    # One floor for alpha, the one validation uses (the GUI once had 0.001 where validation had 1e-6).
    assert config_mod.key_info("network.alpha").min == 1e-6


def test_validation_checks_the_ranges_the_metadata_gives():
    ranged = [(k, i) for k, i in config_mod.KEYS.items() if i.min is not None and i.max is not None]
    assert len(ranged) > 30
    for key, info in ranged:
        step = 1 if info.type is int else 1e-3 * max(1.0, abs(info.max))
        for bad in (info.min - step, info.max + step):
            problems = validate(_valid().with_changes({key: info.type(bad) if info.type is int else bad}))
            assert key in [p.key for p in problems], (key, bad)
        for good in (info.min, info.max):
            problems = validate(_valid().with_changes({key: info.type(good)}))
            assert not [p for p in problems if p.key == key and "between" in p.message], (key, good)


def test_get_and_with_changes_take_dotted_keys():
    cfg = Config().with_changes({"train.resolution": 768, "network.rank": 8})
    assert cfg.get("train.resolution") == 768 and cfg.network.rank == 8
    assert Config().get("train.resolution") == 512  # the original is untouched
    with pytest.raises(KeyError):
        Config().get("train.nope")
    with pytest.raises(KeyError):
        Config().with_changes({"nope.rank": 1})
    with pytest.raises(ConfigError):
        Config().with_changes({"train.resolution": "big"})


def test_smallest_bucket_side_follows_the_resolution_by_default():
    from lora_studio.core.buckets import buckets_for

    assert config_mod.smallest_bucket_side(Config()) == 256  # 512 px: as before
    for resolution in range(64, 1025, 64):  # a fixed 256 left no bucket below 256 px
        cfg = _valid(resolution=resolution)
        assert buckets_for(cfg) and validate(cfg) == [], resolution
    assert config_mod.smallest_bucket_side(_valid(resolution=128)) == 64
    assert config_mod.smallest_bucket_side(_valid(resolution=320)) == 128  # half, in whole steps of 64
    assert config_mod.smallest_bucket_side(_valid().with_changes({"dataset.min_bucket_side": 320})) == 320
    assert "0 picks it from the resolution" in config_mod.key_info("dataset.min_bucket_side").help


def test_messages_name_other_keys_as_placeholders_the_cli_spells_as_keys():
    cfg = _valid().with_changes({"dataset.min_bucket_side": 2048, "dataset.max_bucket_side": 1024})
    (problem,) = validate(cfg)
    assert problem.message == "is 2048, larger than {dataset.max_bucket_side} at 1024; make it smaller."
    assert str(problem) == "dataset.min_bucket_side is 2048, larger than dataset.max_bucket_side at 1024; make it smaller."
    error = ConfigError([problem])
    assert "dataset.min_bucket_side is 2048, larger than dataset.max_bucket_side at 1024" in error.message
    assert "{dataset.min_bucket_side} is 2048, larger than {dataset.max_bucket_side} at 1024" in error.template
