"""The step budget in plain words: images × repeats × epochs = samples = steps.

One arithmetic for the Train tab's sentence, the engine's epoch counter and the export metadata:
the images (each repeated per its folder) form one epoch of samples; samples flow into optimizer steps
of batch_size × gradient_accumulation each, epoch after epoch without a break, so

    steps = ceil(samples / (batch_size × gradient_accumulation))

and only the very last step may be short.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lora_studio.core.errors import UserError


@dataclass(frozen=True)
class StepBudget:
    images: int
    samples_per_epoch: int  # Σ repeats over the images
    epochs: int  # whole epochs begun (the last may be partial when the budget is set in steps)
    samples: int  # images shown in all, counting repeats and epochs
    steps: int  # optimizer steps
    batch_size: int
    gradient_accumulation: int
    min_repeats: int = 1
    max_repeats: int = 1

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.gradient_accumulation

    @property
    def exact_epochs(self) -> float:
        return self.samples / self.samples_per_epoch


def _repeats_of(source: Any) -> list[int]:
    """Per-image repeats from a ScanResult, ImageItems, ss_dataset_dirs-style counts, or plain ints."""
    if isinstance(source, Mapping):
        return [int(d["n_repeats"]) for d in source.values() for _ in range(int(d["img_count"]))]
    items = getattr(source, "items", source)  # a ScanResult holds its images in .items
    repeats = []
    for x in items if isinstance(items, Iterable) else ():
        repeats.append(int(x) if isinstance(x, int) else int(x.repeats))
    return repeats


def _check(repeats: list[int], batch_size: int, grad_accum: int) -> None:
    if not repeats or sum(repeats) <= 0:
        raise UserError("The dataset has no images to train on; add images to the dataset folder.", code="empty_dataset")
    if batch_size < 1 or grad_accum < 1:
        raise UserError(
            f"train.batch_size ({batch_size}) and train.gradient_accumulation ({grad_accum}) must be at least 1; set them to 1 or more.",
            code="bad_config",
        )


def _budget(repeats: list[int], epochs: int, samples: int, steps: int, batch_size: int, grad_accum: int) -> StepBudget:
    return StepBudget(
        images=len(repeats), samples_per_epoch=sum(repeats), epochs=epochs, samples=samples, steps=steps,
        batch_size=batch_size, gradient_accumulation=grad_accum, min_repeats=min(repeats), max_repeats=max(repeats),
    )


def budget_from_epochs(scan_or_counts: Any, epochs: int, batch_size: int = 1, grad_accum: int = 1) -> StepBudget:
    repeats = _repeats_of(scan_or_counts)
    _check(repeats, batch_size, grad_accum)
    epochs = max(1, int(epochs))
    samples = sum(repeats) * epochs
    return _budget(repeats, epochs, samples, math.ceil(samples / (batch_size * grad_accum)), batch_size, grad_accum)


def budget_from_steps(scan_or_counts: Any, max_steps: int, batch_size: int = 1, grad_accum: int = 1) -> StepBudget:
    repeats = _repeats_of(scan_or_counts)
    _check(repeats, batch_size, grad_accum)
    steps = max(1, int(max_steps))
    samples = steps * batch_size * grad_accum
    return _budget(repeats, math.ceil(samples / sum(repeats)), samples, steps, batch_size, grad_accum)


def epoch_of_step(step: int, budget: StepBudget) -> int:
    """The 1-based epoch that optimizer step `step` (1-based) takes its first sample from."""
    first_sample = max(0, step - 1) * budget.samples_per_step
    return min(first_sample // budget.samples_per_epoch + 1, max(1, budget.epochs))


def epochs_done(step: int, budget: StepBudget) -> float:
    """Fractional epochs completed after `step` steps (a chart's x axis)."""
    return min(step * budget.samples_per_step, budget.samples) / budget.samples_per_epoch


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def duration(seconds: float) -> str:
    """'about 25 minutes', rounded the way people say it."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {plural(minutes, 'minute')}"
    if minutes >= 600:  # past ten hours, minutes are noise
        return f"about {plural(round(minutes / 60), 'hour')}"
    hours, rest = divmod(round(minutes / 5) * 5, 60)
    return f"about {plural(hours, 'hour')}" + (f" {plural(rest, 'minute')}" if rest else "")


def describe(budget: StepBudget, seconds_per_step: float | None = None) -> str:
    """E.g. '120 images × 10 repeats × 8 epochs = 9,600 samples = 2,400 steps at batch 4, about 25 minutes'."""
    images = plural(budget.images, "image")
    if budget.min_repeats == budget.max_repeats:
        per_epoch = of_epoch = f"{images} × {plural(budget.min_repeats, 'repeat')}"
    else:
        spread = f"× {budget.min_repeats:,}–{budget.max_repeats:,} repeats"
        per_epoch = f"{images} ({spread}) = {budget.samples_per_epoch:,} per epoch"
        of_epoch = f"{images} ({spread}, {budget.samples_per_epoch:,} per epoch)"
    batch = f"batch {budget.batch_size:,}"
    if budget.gradient_accumulation > 1:
        batch += f" × {budget.gradient_accumulation:,} accumulated"
    if budget.samples == budget.epochs * budget.samples_per_epoch:
        text = (f"{per_epoch} × {plural(budget.epochs, 'epoch')} = {plural(budget.samples, 'sample')} "
                f"= {plural(budget.steps, 'step')} at {batch}")
    else:  # set in steps: the epochs do not come out whole
        text = (f"{plural(budget.steps, 'step')} at {batch} = {plural(budget.samples, 'sample')} "
                f"≈ {budget.exact_epochs:,.1f} epochs of {of_epoch}")
    if seconds_per_step is not None and seconds_per_step > 0:
        text += f", {duration(budget.steps * seconds_per_step)}"
    return text
