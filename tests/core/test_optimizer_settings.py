"""The optimizer table: its choices, the checks on [train.optimizer_args] and the schedules it allows."""

import pytest

from lora_studio.core import config as config_mod
from lora_studio.core import optimizers
from lora_studio.core.config import Config, validate
from lora_studio.core.errors import ConfigError


def _valid(**train) -> Config:
    return Config().replace(model={"base": "m"}, dataset={"path": "d"}, output={"dir": "o"}, train=train)


def test_every_choice_has_its_help_line_and_the_schema_offers_them_all():
    info = config_mod.key_info("train.optimizer")
    assert info.choices == optimizers.NAMES
    assert set(info.choice_help) == set(info.choices) and all(info.choice_help.values())
    assert {"adamw", "adamw8bit", "prodigy", "adafactor", "lion", "lion8bit", "adamw_schedulefree", "came"} == set(info.choices)
    assert "Prodigy finds the learning rate itself — leave" in info.choice_help["prodigy"]
    assert "Prodigy finds the learning rate itself — leave it at 1" in config_mod.key_info("train.learning_rate").help
    schedules = config_mod.key_info("train.lr_scheduler")
    assert set(schedules.choice_help) == set(schedules.choices)
    for name in info.choices:
        assert validate(_valid(optimizer=name, lr_scheduler="constant")) == [], name


def test_optimizer_args_round_trip_through_toml(tmp_path):
    cfg = _valid(optimizer="prodigy", optimizer_args={"d_coef": 0.8, "betas": [0.9, 0.99], "safeguard_warmup": False})
    config_mod.save(cfg, tmp_path / "c.toml")
    text = (tmp_path / "c.toml").read_text()
    assert "[train.optimizer_args]" in text and "d_coef = 0.8" in text
    loaded = config_mod.load(tmp_path / "c.toml")
    assert loaded.train.optimizer_args == {"d_coef": 0.8, "betas": [0.9, 0.99], "safeguard_warmup": False}
    assert config_mod.load(tmp_path / "c.toml") == loaded
    # Ours first, then the artist's; lists become the tuples the libraries take.
    assert optimizers.arguments("prodigy", loaded.train.optimizer_args) == {
        "use_bias_correction": True, "safeguard_warmup": False, "d_coef": 0.8, "betas": (0.9, 0.99)}
    config_mod.save(_valid(), tmp_path / "plain.toml")
    assert config_mod.load(tmp_path / "plain.toml").train.optimizer_args == {}


def test_an_unknown_argument_says_which_ones_the_optimizer_takes():
    (problem,) = validate(_valid(optimizer="lion", optimizer_args={"d_coef": 0.8}))
    assert problem.key == "train.optimizer_args"
    assert str(problem) == ("train.optimizer_args has 'd_coef', which lion does not take; "
                            "lion takes betas, weight_decouple, fixed_decay.")


def test_a_wrong_type_says_what_type_is_expected(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nbase = "m"\n[dataset]\npath = "d"\n[output]\ndir = "o"\n'
                    '[train]\noptimizer = "prodigy"\n[train.optimizer_args]\nd_coef = "high"\nbetas = [0.9]\n'
                    'use_bias_correction = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        config_mod.load(path)
    said = [str(p) for p in e.value.problems]
    assert said == [
        "train.optimizer_args has d_coef = 'high'; d_coef must be a number (for example 0.8).",
        "train.optimizer_args has betas = [0.9]; betas must be a list of 2 numbers (for example [0.9, 0.999]).",
        "train.optimizer_args has use_bias_correction = 1; use_bias_correction must be true or false.",
    ]


def test_arguments_that_are_settings_of_their_own_point_there():
    (problem,) = validate(_valid(optimizer_args={"lr": 1e-3}))
    assert problem.message == "sets 'lr', which is {train.learning_rate}'s; set that instead."
    (problem,) = validate(_valid(optimizer_args={"betas": [0.9, 1.5]}))
    assert "each beta must be at least 0 and below 1" in problem.message
    bad = _valid().with_changes({"train.optimizer_args": {}})
    assert validate(bad) == []
    with pytest.raises(ConfigError, match="must be a table"):
        config_mod.from_dict({"train": {"optimizer_args": 3}})


def test_schedule_free_and_relative_step_take_no_schedule():
    (problem,) = validate(_valid(optimizer="adamw_schedulefree", lr_scheduler="cosine"))
    assert problem.key == "train.lr_scheduler" and "'constant'" in problem.message and "{train.warmup_steps}" in problem.message
    assert validate(_valid(optimizer="adamw_schedulefree", lr_scheduler="constant_with_warmup", warmup_steps=10)) == []
    rel = {"relative_step": True}
    (problem,) = validate(_valid(optimizer="adafactor", optimizer_args=rel, lr_scheduler="linear"))
    assert "relative_step" in problem.message
    assert validate(_valid(optimizer="adafactor", optimizer_args={**rel, "warmup_init": True})) == []
    (problem,) = validate(_valid(optimizer="adafactor", optimizer_args={"warmup_init": True}))
    assert "only with relative_step = true" in problem.message


def test_prodigy_far_from_a_learning_rate_of_1_is_warned_about():
    assert optimizers.warnings(_valid(optimizer="prodigy", learning_rate=1.0)) == []
    (warning,) = optimizers.warnings(_valid(optimizer="prodigy", learning_rate=1e-4))
    assert warning.startswith("{train.learning_rate} is 0.0001") and "Set it to 1" in warning
    with_te = _valid(optimizer="prodigy", learning_rate=1.0).with_changes({"network.train_text_encoder": True})
    assert [w.split(" ")[0] for w in optimizers.warnings(with_te)] == ["{network.text_encoder_lr}"]
    assert optimizers.warnings(_valid(optimizer="adamw", learning_rate=1e-4)) == []
    (warning,) = optimizers.warnings(_valid(optimizer="adafactor", optimizer_args={"relative_step": True}))
    assert "not used" in warning


def test_the_schedule_options_have_ranges():
    assert validate(_valid(lr_scheduler="cosine_with_restarts", lr_cycles=3)) == []
    assert [p.key for p in validate(_valid(lr_cycles=0))] == ["train.lr_cycles"]
    assert [p.key for p in validate(_valid(lr_scheduler="polynomial", lr_power=0.0))] == ["train.lr_power"]
