"""`lora-studio bench --preset world` on a very short run: the JSON it writes, both sides alike, every number finite.

How well each recipe learns is the benchmark's job (docs/performance.md, "Learning on the demo world"); here
two steps and two-step sampling only show that the whole path runs and reports what it says it does.
"""

import json

import pytest

from lora_studio.core import world
from lora_studio.core import demo
from lora_studio.engine.bench import learning

STEPS = 2
ROW_KEYS = {"step", "style", "prompts", "dark_share", "follows", "background", "train_s", "loss", "lr"}


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "world.json"
    code = learning.learning_bench_command("world", steps=STEPS, json_path=out, pictures_per_prompt=1, sampling_steps=2)
    assert code == 0
    return json.loads(out.read_text())


def test_json_has_both_sides_at_every_sampled_step(doc):
    assert {"preset", "lora_studio", "reference", "settings", "world_model", "device", "versions", "date", "wall_s"} <= set(doc)
    assert doc["preset"] == "world"
    assert doc["settings"]["sampled_at"] == [0, 1, 2]
    assert doc["settings"]["steps"] == STEPS and doc["settings"]["prompts"] == demo.PROMPTS
    assert doc["world_model"]["path"].endswith("world")
    for side in ("lora_studio", "reference"):
        block = doc[side]
        assert {"setup_s", "train_s", "sample_s", "settings", "steps", "recommended"} <= set(block)
        assert [row["step"] for row in block["steps"]] == [0, 1, 2]
        assert all(set(row) == ROW_KEYS for row in block["steps"])
        assert block["recommended"]["step"] in (1, 2) and block["recommended"]["sentence"].startswith("Step ")


def test_every_number_is_finite_and_in_its_range(doc):
    assert learning.finite_numbers(doc) == []
    for side in ("lora_studio", "reference"):
        rows = doc[side]["steps"]
        assert rows[0]["loss"] is None and rows[0]["train_s"] == 0 and rows[0]["style"] == 0
        for row in rows:
            assert all(0 <= row[k] <= 1 for k in ("prompts", "follows", "background", "dark_share"))
            assert row["follows"] <= row["background"]  # following a prompt includes drawing its background
            assert isinstance(row["style"], float) and row["lr"] >= 0
        for earlier, later in zip(rows, rows[1:]):
            assert later["loss"] > 0 and later["train_s"] > earlier["train_s"]
        assert doc[side]["train_s"] == rows[-1]["train_s"]


def test_both_recipes_train_the_same_lora_on_the_same_schedule(doc):
    assert doc["settings"]["settings_match"], doc["settings"]["mismatched_settings"]
    ours, ref = doc["lora_studio"]["settings"], doc["reference"]["settings"]
    for key in learning.SETTING_KEYS_THAT_MUST_MATCH:
        assert ours[key] == ref[key], key
    assert ours["rank"] == [8] and ours["lora_modules"] > 0  # the demo's settings
    # The demo's cosine schedule with warm-up, step by step on both sides.
    assert [r["lr"] for r in doc["lora_studio"]["steps"]] == pytest.approx([r["lr"] for r in doc["reference"]["steps"]])


def test_the_step0_pictures_are_the_base_models_on_both_sides(doc):
    # Both LoRAs start with B = 0, so the two sides' step-0 rows read the same pictures.
    first = [doc[side]["steps"][0] for side in ("lora_studio", "reference")]
    for key in ("dark_share", "follows", "background", "prompts"):
        assert first[0][key] == first[1][key], key


def test_the_table_names_both_sides(doc, capsys):
    table = learning.format_table(doc)
    assert table.count("lora_studio ") == 3 and table.count("reference ") == 3
    assert "settings match: True" in table


def test_each_held_out_prompt_has_its_own_answer_key():
    scenes = learning.held_out_scenes()
    assert len(scenes) == len(demo.PROMPTS)
    for j, scene in enumerate(scenes):
        reading = world.read_picture(world.render(scene, (64, 64)))
        assert reading.follows(scene), (demo.PROMPTS[j], reading)
        assert not any(reading.follows(other) for k, other in enumerate(scenes) if k != j)
        assert scene.background in demo.PROMPTS[j] and all(c in demo.PROMPTS[j] for c in scene.colours())


def test_samples_at_quarters_of_the_run():
    assert learning.sample_steps(200, 4) == [0, 50, 100, 150, 200]
    assert learning.sample_steps(2, 4) == [0, 1, 2]


def test_the_cli_takes_the_preset_and_refuses_a_speed_only_option(capsys):
    from lora_studio.cli import main

    assert main(["bench", "--preset", "world", "--base-weights", "fp16"]) == 2
    assert "--base-weights applies to the speed presets only" in capsys.readouterr().err
