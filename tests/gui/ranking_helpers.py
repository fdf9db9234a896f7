"""A run's ranking file as the engine writes it at the end of a run (engine/evaluate/rank.save_ranking)."""

from __future__ import annotations

import json
from pathlib import Path

from lora_studio.core.ranking import CheckpointScore, Recommendation
from lora_studio.core.runs import RunDir


def sentence(step: int) -> str:
    return f"Step {step}: style 0.82, prompts still followed (100%); later steps start to overfit (validation loss rises)."


def write_ranking(folder: Path, step: int, steps: tuple[int, ...] = (20, 40)) -> Recommendation:
    """ranking.json in a run folder (or a comparison's: the same name) recommending `step`."""
    rec = Recommendation(step, sentence(step), 1.0, [CheckpointScore(s, 0.5 + s / 100, 1.0, 0.1) for s in steps])
    RunDir(folder).ranking.write_text(json.dumps(rec.to_json(), indent=1), encoding="utf-8")
    return rec
