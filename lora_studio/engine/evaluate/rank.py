"""Score a run's checkpoints from pictures it already has, and recommend one (core/ranking.py decides).

The pictures are the run's own samples (the same prompts and seeds at every sampled step; step 0 is the
base model, since a LoRA starts at zero) or a comparison grid's cells at strength 1 with the trigger. For
each step: the mean style score of its pictures (0 = the step-0 pictures' look, 1 = the training images')
and its prompt score (the share the base model reads as their own prompt). Loading the base model and
encoding a few dozen small pictures is all it costs: nothing is rendered again.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from PIL import Image

from lora_studio.core import events as ev
from lora_studio.core.atomic import atomic_write_text
from lora_studio.core.captions import remove_trigger
from lora_studio.core.config import Config
from lora_studio.core.dataset import scan
from lora_studio.core.images import ImageError, load_rgb
from lora_studio.core.ranking import CheckpointScore, Recommendation, read_ranking, recommend
from lora_studio.core.runs import RunDir, SampleFile
from lora_studio.engine.evaluate import prompts as prompt_score
from lora_studio.engine.evaluate import style

MAX_DATA_IMAGES = 64  # the training set's look is a mean: 64 pictures pin it down


def samples_by_step(samples_dir: Path) -> dict[int, list[tuple[Path, int]]]:
    """{step: [(picture, prompt index)]} of a run's samples folder."""
    found: dict[int, list[tuple[Path, int]]] = {}
    if Path(samples_dir).is_dir():
        for s in sorted(s for p in Path(samples_dir).iterdir() if (s := SampleFile.parse(p)) is not None):
            found.setdefault(s.step, []).append((s.path, s.index))
    return found


def training_pictures(cfg: Config, limit: int = MAX_DATA_IMAGES) -> list[Image.Image]:
    items = scan(cfg.dataset).items
    pictures = []
    for item in items[:: max(1, len(items) // limit)]:
        try:
            pictures.append(load_rgb(item.path))
        except ImageError:
            continue  # training skipped it too (and said so)
        if len(pictures) == limit:
            break
    return pictures


def judge_prompts(prompts: list[str], trigger: str) -> list[str]:
    # The base model does not know the trigger word: it would only add noise to every candidate alike.
    return [remove_trigger(p, trigger) if trigger else p for p in prompts]


def score_steps(models, cfg: Config, pictures: dict[int, list[tuple[Image.Image, int]]], prompts: list[str],
                data: list[Image.Image], validation: dict[int, float] | None = None,
                judge=None) -> Recommendation | None:
    """Rank every step of `pictures` against its step 0 (the base model's pictures of the same prompts).

    `judge(step)` is a context manager that puts the models into the state that judges step `step`'s
    pictures; by default the base model judges every step (the LoRA at scale 0).
    """
    if 0 not in pictures or len(pictures) < 2:
        return None
    judge = judge or (lambda step: base_model([models.unet, *models.text_encoders]))
    size = cfg.train.resolution
    base = [img for img, _ in pictures[0]]
    scale = style.style_scale(models.vae, base, data, size)
    candidates = judge_prompts(prompts, cfg.output.trigger.strip())

    def prompt_share(step: int) -> float:
        if len(candidates) < 2:
            return 1.0
        items = pictures[step]
        with judge(step):
            errors = prompt_score.prompt_errors(models, [img for img, _ in items], candidates, size,
                                                seed=cfg.sample.seed, clip_skip=cfg.model.clip_skip)
        hits = prompt_score.followed(errors, [j for _, j in items])
        return sum(hits) / len(hits)

    base_prompts = prompt_share(0)
    scores = []
    for step in sorted(s for s in pictures if s > 0):
        items = pictures[step]
        mean_style = sum(style.style_scores(models.vae, scale, [img for img, _ in items], size)) / len(items)
        scores.append(CheckpointScore(step, round(mean_style, 3), round(prompt_share(step), 3), (validation or {}).get(step)))
    return recommend(scores, round(base_prompts, 3))


def validation_losses(events_file: Path) -> dict[int, float]:
    return {e.step: e.loss for e in ev.read_jsonl(events_file) if isinstance(e, ev.Validation)}


def to_event(rec: Recommendation) -> ev.Ranking:
    return ev.Ranking(rec.step, rec.sentence, [s.__dict__ for s in rec.scores], rec.base_prompts)


@torch.no_grad()
def rank_samples(models, cfg: Config, samples_dir: Path, steps: list[int], *, validation: dict[int, float] | None = None,
                 judge=None) -> Recommendation | None:
    """Rank the steps in `steps` (those that can still be exported) by the run's own samples."""
    by_step = samples_by_step(samples_dir)
    wanted = {0, *steps}
    pictures = {s: [(load_rgb(p), j) for p, j in items] for s, items in by_step.items() if s in wanted}
    return score_steps(models, cfg, pictures, list(cfg.sample.prompts), training_pictures(cfg), validation, judge)


@contextlib.contextmanager
def base_model(modules):
    """The modules with every adapter switched off — exactly the base model, DoRA too — for the judge; restored after."""
    from lora_studio.engine.training import lora

    with lora.adapters_off(modules):
        yield


def rank_trained_run(trainer, cfg: Config, run_dir: Path, steps: list[int], validation: dict[int, float]) -> Recommendation | None:
    """At the end of a run: rank its kept checkpoints by the samples it made.

    Each checkpoint's pictures are judged by that checkpoint itself (its LoRA loaded at strength 1), the
    base pictures by the base model: the question is whether the model still *uses* the prompt to draw,
    which an overtrained LoRA stops doing. (Judged by the base model alone, a style the base has never
    seen — the world model and black outlines — makes every styled picture look equally unlike every
    prompt.) The trained weights are put back afterwards.
    """
    from safetensors.torch import load_file

    from lora_studio.engine.training import lora

    m = trainer.models
    unet, tes = trainer.lora_modules
    final = lora.lora_state(unet, tes)
    run = RunDir(run_dir)

    @contextlib.contextmanager
    def judge(step: int):
        if step == 0:
            with base_model([m.unet, *m.text_encoders]):
                yield
            return
        lora.load_lora_state(load_file(run.checkpoint(step).lora), unet, tes)
        try:
            yield
        finally:
            lora.load_lora_state(final, unet, tes)

    return rank_samples(m, cfg, run.samples_dir, steps, validation=validation, judge=judge)


def save_ranking(run_dir: Path, rec: Recommendation) -> Path:
    path = RunDir(run_dir).ranking
    atomic_write_text(path, json.dumps(rec.to_json(), indent=1))
    return path


def load_ranking(run_dir: Path) -> Recommendation | None:
    return read_ranking(RunDir(run_dir).ranking)  # the app's reader too: one rule for what a ranking file holds
