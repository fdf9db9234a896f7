"""Which checkpoint to keep: the rule and its sentence (core/ranking.py)."""

from __future__ import annotations

import json

from lora_studio.core.ranking import CheckpointScore as S
from lora_studio.core.ranking import Recommendation, read_ranking, recommend
from lora_studio.core.runs import RunDir


def test_overtrained_checkpoints_lose_however_strong_their_style():
    rec = recommend([S(50, 0.4, 1.0), S(100, 0.8, 0.9), S(150, 0.95, 0.5)], base_prompts=1.0)
    assert rec.step == 100
    assert rec.overtrained == [150]
    assert rec.sentence.startswith("Step 100: style 0.80, prompts still followed (90%)")
    assert "later steps start to overfit" in rec.sentence


def test_an_earlier_checkpoint_as_good_is_preferred():
    rec = recommend([S(50, 0.3, 1.0), S(100, 0.78, 1.0), S(150, 0.81, 1.0)], base_prompts=1.0)
    assert rec.step == 100 and "later steps add no style" in rec.sentence


def test_validation_loss_breaks_ties_and_says_when_it_rises():
    rec = recommend([S(50, 0.8, 1.0, 0.20), S(100, 0.82, 1.0, 0.18), S(150, 0.83, 1.0, 0.25)], base_prompts=1.0)
    assert rec.step == 100
    assert "validation loss rises" in rec.sentence
    steady = recommend([S(50, 0.2, 1.0, 0.30), S(100, 0.8, 1.0, 0.20), S(150, 0.9, 1.0, 0.19)], base_prompts=1.0)
    assert "overfit" not in steady.sentence


def test_no_checkpoint_follows_the_prompts_says_what_to_do():
    rec = recommend([S(50, 0.9, 0.2), S(100, 0.95, 0.1)], base_prompts=1.0)
    assert rec.step == 50 and "train fewer steps or lower the learning rate" in rec.sentence


def test_a_style_that_has_not_arrived_is_said():
    rec = recommend([S(50, 0.05, 1.0), S(100, 0.1, 1.0)], base_prompts=1.0)
    assert "hardly arrived" in rec.sentence


def test_round_trips_through_json_and_nothing_to_rank_is_none():
    rec = recommend([S(50, 0.5, 1.0, 0.1), S(100, 0.9, 1.0, None)], base_prompts=0.75)
    assert Recommendation.from_json(rec.to_json()) == rec
    assert recommend([], 1.0) is None


def test_a_ranking_file_is_read_back_and_a_broken_one_marks_nothing(tmp_path):
    rec = recommend([S(50, 0.5, 1.0, 0.1), S(100, 0.9, 1.0, 0.2)], base_prompts=1.0)
    path = RunDir(tmp_path).ranking
    assert read_ranking(path) is None  # no ranking yet
    path.write_text(json.dumps(rec.to_json()), encoding="utf-8")
    assert read_ranking(path) == rec
    for broken in ("{ cut short", "[]", '{"sentence": "no step"}', '{"step": 1, "sentence": "s", "scores": [{"x": 1}]}'):
        path.write_text(broken, encoding="utf-8")
        assert read_ranking(path) is None, broken
    path.write_bytes(b"\xff\xfe not utf-8")
    assert read_ranking(path) is None
