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
        "train.epochs is -3; set it to 0 to train for train.max_steps steps, "
        "or to the number of whole epochs to train (up to 100000)."
    )
    with pytest.raises(ConfigError):
        config_mod.from_dict({"train": {"epochs": -1}, "model": {"base": "m"}, "dataset": {"path": "d"}, "output": {"dir": "o"}})
