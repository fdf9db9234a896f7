"""Which checkpoint to keep: a run's checkpoints ranked by style score, prompt score and validation loss.

The scores come from the engine (`lora_studio.engine.evaluate`); this module only decides and words the
decision, so the history, the Compare grid, the Export dialog and `lora-studio compare --rank` say the
same sentence. The rule, as an artist would pick by eye:

1. a checkpoint whose pictures no longer follow their prompts (prompt score below 80 % of the base
   model's own) is overtrained, whatever its style;
2. among the rest, the strongest style wins, but an earlier checkpoint within 0.05 of it is preferred
   (as good, and less fitted to the training images);
3. the validation loss, when the run has one, breaks what is left of a tie and says whether later steps
   overfit (their validation loss rises above the minimum).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

STILL_FOLLOWED = 0.8  # a share of the base model's own prompt score
STYLE_TIE = 0.05
STYLE_ARRIVED = 0.3


@dataclass(frozen=True)
class CheckpointScore:
    step: int
    style: float  # 0 = the base model's look, 1 = the training set's
    prompts: float  # share of pictures the base model reads as their own prompt
    validation_loss: float | None = None


@dataclass(frozen=True)
class Recommendation:
    step: int
    sentence: str
    base_prompts: float
    scores: list[CheckpointScore] = field(default_factory=list)
    overtrained: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"version": 1, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> "Recommendation":
        scores = [CheckpointScore(**s) for s in data.get("scores", [])]
        return cls(int(data["step"]), str(data["sentence"]), float(data.get("base_prompts", 0.0)), scores,
                   [int(s) for s in data.get("overtrained", [])])


def read_ranking(path: Path) -> Recommendation | None:
    """The recommendation a ranking file holds (a run's RunDir.ranking, or a comparison's); None when there
    is none or it cannot be read, and then nothing is marked: a ranking is advice, never in the way."""
    try:
        return Recommendation.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None


def recommend(scores: list[CheckpointScore], base_prompts: float) -> Recommendation | None:
    """The checkpoint to keep and one sentence saying why; None when there is nothing to rank."""
    if not scores:
        return None
    scores = sorted(scores, key=lambda s: s.step)
    floor = STILL_FOLLOWED * base_prompts
    good = [s for s in scores if s.prompts >= floor]
    overtrained = [s.step for s in scores if s.prompts < floor]
    if not good:
        best = max(scores, key=lambda s: (s.prompts, -s.step))
        sentence = (f"Step {best.step} bends the prompts least (prompts {best.prompts:.0%}, the base model "
                    f"{base_prompts:.0%}), but every checkpoint draws its training images whatever it is asked: "
                    "train fewer steps or lower the learning rate.")
        return Recommendation(best.step, sentence, base_prompts, scores, overtrained)
    top = max(s.style for s in good)
    near = [s for s in good if s.style >= top - STYLE_TIE]
    with_val = [s for s in near if s.validation_loss is not None]
    best = min(with_val, key=lambda s: (s.validation_loss, s.step)) if len(with_val) == len(near) and len(near) > 1 \
        else near[0]
    parts = [f"Step {best.step}: style {best.style:.2f}, prompts still followed ({best.prompts:.0%})"]
    later = [s for s in scores if s.step > best.step]
    if any(s.step in overtrained for s in later):
        parts.append("later steps start to overfit (their pictures stop following the prompts)")
    elif _validation_rises_after(scores, best.step):
        parts.append("later steps start to overfit (validation loss rises)")
    elif later:
        parts.append("later steps add no style")
    if best.style < STYLE_ARRIVED:
        parts.append("the style has hardly arrived: train longer or raise the learning rate")
    return Recommendation(best.step, "; ".join(parts) + ".", base_prompts, scores, overtrained)


def _validation_rises_after(scores: list[CheckpointScore], step: int) -> bool:
    """The validation loss has a minimum and, after it and after `step`, rises more than 2 % above it."""
    measured = [s for s in scores if s.validation_loss is not None]
    if len(measured) < 2:
        return False
    low = min(measured, key=lambda s: s.validation_loss)
    return any(s.step > max(low.step, step) and s.validation_loss > low.validation_loss * 1.02 for s in measured)
