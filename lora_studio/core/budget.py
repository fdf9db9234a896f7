"""The step budget in plain words: images × repeats × epochs = samples = steps.

One arithmetic for the Settings tab's sentence, the engine's max_steps when the length is set in epochs
(train.epochs), its epoch counter and the export metadata. It counts the way the engine's BatchPlan cuts
an epoch (kohya's scheme): each image repeated per its folder, the samples grouped by aspect-ratio bucket
(a batch shares one shape), each bucket cut into batches of batch_size with a short last one, so

    batches_per_epoch = Σ over buckets ceil(samples in the bucket / batch_size)    (buckets.batch_count)

An optimizer step takes gradient_accumulation × world_size of those batches, running on from one epoch
into the next without a break, so

    steps = ceil(epochs × batches_per_epoch / (gradient_accumulation × world_size))

(the last step may reach a batch into the next epoch; the engine still counts it in the last epoch).
Regularisation pictures (dataset.regularization) add as many samples per epoch as the images give
(core/dataset.regularization_epoch, kohya's rule), batched with them: they double an epoch's steps.
Without the images' sizes (kohya's ss_dataset_dirs counts, bare repeat counts) every image is taken to
share one bucket: exact for a dataset of one shape, and never more steps than the real count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lora_studio.core.buckets import Bucket, batch_count, bucket_counts, buckets_for
from lora_studio.core.dataset import ImageItem, regularization_epoch, scan_regularization, split_validation
from lora_studio.core.errors import UserError

if TYPE_CHECKING:
    from lora_studio.core.config import Config


@dataclass(frozen=True)
class StepBudget:
    images: int
    samples_per_epoch: int  # Σ repeats over the images
    batches_per_epoch: int  # as BatchPlan cuts them (see the module docstring)
    epochs: int  # the epoch the last step is in: whole epochs when set in epochs, else the last may be partial
    steps: int  # optimizer steps
    batch_size: int
    gradient_accumulation: int
    world_size: int = 1  # processes training together (accelerate launch); each takes its own batches
    shapes: int = 1  # buckets in use (1 when the images' sizes are unknown)
    min_repeats: int = 1  # of the images (not the regularisation pictures)
    max_repeats: int = 1
    regularization: int = 0  # regularisation samples per epoch (in samples_per_epoch too)

    @property
    def micro_per_step(self) -> int:
        return self.gradient_accumulation * self.world_size

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.micro_per_step  # at most: a bucket's last batch may be short

    @property
    def batches(self) -> int:
        return self.steps * self.micro_per_step

    @property
    def whole_epochs(self) -> bool:
        return self.steps == steps_for_epochs(self.epochs, self.batches_per_epoch, self.micro_per_step)

    @property
    def exact_epochs(self) -> float:
        return float(self.epochs) if self.whole_epochs else self.batches / self.batches_per_epoch

    @property
    def samples_exact(self) -> bool:
        # Part of an epoch holds an unknown mix of full and short batches (their order is shuffled).
        return self.whole_epochs or self.batch_size == 1 or self.batches % self.batches_per_epoch == 0

    @property
    def samples(self) -> int:
        """Images shown in all, counting repeats and epochs (rounded when an epoch is partial, see samples_exact)."""
        if self.whole_epochs:
            return self.epochs * self.samples_per_epoch
        whole, rest = divmod(self.batches, self.batches_per_epoch)
        return whole * self.samples_per_epoch + round(rest * self.samples_per_epoch / self.batches_per_epoch)


def steps_for_epochs(epochs: int, batches_per_epoch: int, micro_per_step: int) -> int:
    return math.ceil(epochs * batches_per_epoch / micro_per_step)


def _repeats_of(source: Any) -> list[int]:
    """Per-image repeats from a ScanResult, ImageItems, ss_dataset_dirs-style counts, or plain ints."""
    if isinstance(source, Mapping):
        return [int(d["n_repeats"]) for d in source.values() for _ in range(int(d["img_count"]))]
    items = getattr(source, "items", source)  # a ScanResult holds its images in .items
    repeats = []
    for x in items if isinstance(items, Iterable) else ():
        repeats.append(int(x) if isinstance(x, int) else int(x.repeats))
    return repeats


def _sized_items(source: Any) -> list[Any] | None:
    """The images with their sizes, or None where the source holds only counts."""
    if isinstance(source, Mapping):
        return None
    items = list(getattr(source, "items", source))
    return items if all(hasattr(x, "width") and hasattr(x, "height") for x in items) else None


def _cut(source: Any, repeats: list[int], batch_size: int, buckets: list[Bucket] | None) -> tuple[int, int]:
    """(batches per epoch, shapes in use)."""
    items = _sized_items(source) if buckets else None
    if items is None:
        # No sizes (metadata counts) or no bucket settings: one shared bucket, the fewest batches possible.
        return batch_count([sum(repeats)], batch_size), 1
    counts = bucket_counts(items, buckets)
    return batch_count(counts.values(), batch_size), len(counts)


def _check(repeats: list[int], batch_size: int, grad_accum: int) -> None:
    if not repeats or sum(repeats) <= 0:
        raise UserError("The dataset has no images to train on; add images to the dataset folder.", code="empty_dataset")
    if batch_size < 1 or grad_accum < 1:
        raise UserError(
            f"train.batch_size ({batch_size}) and train.gradient_accumulation ({grad_accum}) must be at least 1; set them to 1 or more.",
            code="bad_config",
        )


def _budget(source: Any, batch_size: int, grad_accum: int, buckets: list[Bucket] | None, world_size: int, *,
            steps: int | None = None, epochs: int | None = None) -> StepBudget:
    """The budget for `epochs` whole epochs, or for `steps` steps (then the epochs are the engine's count)."""
    repeats = _repeats_of(source)
    sized = _sized_items(source) or []
    reg = [x.repeats for x in sized if getattr(x, "regularization", False)]
    own = [x.repeats for x in sized if not getattr(x, "regularization", False)] if reg else repeats
    _check(own, batch_size, grad_accum)
    per_epoch, shapes = _cut(source, repeats, batch_size, buckets)
    world_size = max(1, world_size)
    micro = grad_accum * world_size
    if epochs is not None:
        epochs = max(1, int(epochs))
        steps = steps_for_epochs(epochs, per_epoch, micro)
    else:
        steps = max(1, int(steps or 0))
        epochs = (steps - 1) * micro // per_epoch + 1  # the epoch of the last step, as BatchPlan counts it
    return StepBudget(
        images=len(own), samples_per_epoch=sum(repeats), batches_per_epoch=per_epoch, epochs=epochs, steps=steps,
        batch_size=batch_size, gradient_accumulation=grad_accum, world_size=world_size, shapes=shapes,
        min_repeats=min(own), max_repeats=max(own), regularization=sum(reg),
    )


def budget_from_epochs(scan_or_counts: Any, epochs: int, batch_size: int = 1, grad_accum: int = 1, *,
                       buckets: list[Bucket] | None = None, world_size: int = 1) -> StepBudget:
    """Whole epochs. With `buckets` (buckets_for(cfg)) and images that have sizes, the engine's exact count."""
    return _budget(scan_or_counts, batch_size, grad_accum, buckets, world_size, epochs=epochs)


def budget_from_steps(scan_or_counts: Any, max_steps: int, batch_size: int = 1, grad_accum: int = 1, *,
                      buckets: list[Bucket] | None = None, world_size: int = 1) -> StepBudget:
    return _budget(scan_or_counts, batch_size, grad_accum, buckets, world_size, steps=max_steps)


def budget_for(cfg: Config, scan_or_items: Any, world_size: int = 1, *,
               regularization: list[ImageItem] | None = None) -> StepBudget:
    """What a config trains on these images: train.epochs whole epochs when set (> 0), else train.max_steps.
    The regularisation pictures are `regularization` (a scan already made) or, when None, dataset.regularization's
    folder is scanned here (image headers only)."""
    t = cfg.train
    buckets = buckets_for(cfg)
    if regularization is None and cfg.dataset.regularization.path.strip():
        found = scan_regularization(cfg.dataset)
        regularization = found.items if found else []
    if cfg.dataset.validation_split or regularization:
        items = list(getattr(scan_or_items, "items", scan_or_items))
        # Held-out images are not trained on: the budget counts what the engine's BatchPlan will batch.
        if cfg.dataset.validation_split:
            items = split_validation(items, cfg.dataset.validation_split, t.seed)[0]
        scan_or_items = items + regularization_epoch(items, regularization or [])
    if t.epochs > 0:
        return budget_from_epochs(scan_or_items, t.epochs, t.batch_size, t.gradient_accumulation, buckets=buckets, world_size=world_size)
    return budget_from_steps(scan_or_items, t.max_steps, t.batch_size, t.gradient_accumulation, buckets=buckets, world_size=world_size)


def epoch_of_step(step: int, budget: StepBudget) -> int:
    """The 1-based epoch that optimizer step `step` (1-based) takes its first batch from (BatchPlan.epoch_of_step)."""
    first_batch = max(0, step - 1) * budget.micro_per_step
    return min(first_batch // budget.batches_per_epoch + 1, max(1, budget.epochs))


def epochs_done(step: int, budget: StepBudget) -> float:
    """Fractional epochs completed after `step` steps (a chart's x axis)."""
    return min(step * budget.micro_per_step / budget.batches_per_epoch, budget.exact_epochs)


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


def _cut_note(budget: StepBudget) -> str:
    """Why the steps are more than samples ÷ batch: the short batches (empty when there are none)."""
    if budget.batches_per_epoch * budget.batch_size == budget.samples_per_epoch:
        return ""
    batches = plural(budget.batches_per_epoch, "batch", "batches")
    if budget.shapes > 1:
        return f" ({batches} per epoch: {budget.shapes:,} image shapes, each batched on its own)"
    return f" ({batches} per epoch, the last one short)"


def describe(budget: StepBudget, seconds_per_step: float | None = None) -> str:
    """E.g. '120 images × 10 repeats × 8 epochs = 9,600 samples = 2,400 steps at batch 4, about 25 minutes'."""
    images = plural(budget.images, "image")
    reg = f" + {plural(budget.regularization, 'regularisation sample')}" if budget.regularization else ""
    if budget.min_repeats == budget.max_repeats and not reg:
        per_epoch = of_epoch = f"{images} × {plural(budget.min_repeats, 'repeat')}"
    else:
        uniform = budget.min_repeats == budget.max_repeats
        spread = f"× {plural(budget.min_repeats, 'repeat')}" if uniform else f"× {budget.min_repeats:,}–{budget.max_repeats:,} repeats"
        per_epoch = f"{images} {spread if uniform else f'({spread})'}{reg} = {budget.samples_per_epoch:,} per epoch"
        of_epoch = f"{images} ({spread}{reg}, {budget.samples_per_epoch:,} per epoch)"
    batch = f"batch {budget.batch_size:,}"
    if budget.gradient_accumulation > 1:
        batch += f" × {budget.gradient_accumulation:,} accumulated"
    batch += _cut_note(budget)
    if budget.whole_epochs:
        text = (f"{per_epoch} × {plural(budget.epochs, 'epoch')} = {plural(budget.samples, 'sample')} "
                f"= {plural(budget.steps, 'step')} at {batch}")
    else:  # set in steps: the epochs do not come out whole
        samples = ("= " if budget.samples_exact else "≈ ") + plural(budget.samples, "sample")
        text = f"{plural(budget.steps, 'step')} at {batch} {samples} ≈ {budget.exact_epochs:,.1f} epochs of {of_epoch}"
    if seconds_per_step is not None and seconds_per_step > 0:
        text += f", {duration(budget.steps * seconds_per_step)}"
    return text
