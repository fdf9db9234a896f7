"""What a run trains on: the dataset read once at the start, with the problems it has said aloud.

The images (core/dataset.scan, each decoded so a truncated file is skipped with a warning, not a crash),
the validation images held out of them (training/validation.held_out), train.epochs turned into steps
(core/budget, the Settings tab's arithmetic) and the regularisation pictures of dataset.regularization,
mixed into every epoch by kohya's rule (core/dataset.regularization_epoch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from lora_studio.core import budget as budget_mod
from lora_studio.core import events as ev
from lora_studio.core.config import Config
from lora_studio.core.dataset import ImageItem, ScanResult, regularization_epoch, scan, scan_regularization
from lora_studio.core.errors import spell
from lora_studio.engine.training import validation


@dataclass
class RunData:
    images: ScanResult  # the training images (held-out ones removed)
    items: list[ImageItem]  # what the batches hold: the images and one epoch's regularisation pictures
    held: list[ImageItem]  # the validation images
    regularization: ScanResult | None  # the regularisation folder's pictures (their own repeats)

    def info(self) -> dict:
        """What the run's state (and so the export's kohya metadata) records of its data."""
        from lora_studio.core.captions import tag_frequency

        out = {"num_train_images": len(self.images.items), "dataset_dirs": self.images.dataset_dirs(),
               "tag_frequency": tag_frequency(self.images.items)}
        if self.regularization:
            # kohya's ss_num_reg_images counts the pictures with their folders' repeats, as ss_reg_dataset_dirs does.
            out["num_reg_images"] = self.regularization.samples_per_epoch
            out["reg_dataset_dirs"] = self.regularization.dataset_dirs()
        return out


def _say_skipped(result: ScanResult, emit: Callable[[ev.Event], None], what: str) -> None:
    for path, reason in result.skipped:
        emit(ev.Warning(f"Skipped {what}{path.name}: {reason}", code="bad_image", path=str(path)))


def _missing_captions(items: list[ImageItem]) -> str:
    """What the uncaptioned images train with: the scan gives them the default caption, else their N_name
    folder's name, else nothing (which teaches the style to no word at all)."""
    n = len(items)
    head = f"{budget_mod.plural(n, 'image')} {'has' if n == 1 else 'have'} no caption file"
    words = sorted({item.caption for item in items if item.caption})
    if not words:
        return spell(f"{head} and {'trains' if n == 1 else 'train'} with no words at all; write captions in the "
                     "Dataset tab, or set {dataset.default_caption}.")
    shown = ", ".join(f'"{w}"' for w in words[:3]) + (" …" if len(words) > 3 else "")
    return f"{head}; {'it trains' if n == 1 else 'they train'} with {shown} (the default caption, or the folder's name)."


def read(cfg: Config, emit: Callable[[ev.Event], None], world_size: int = 1) -> tuple[Config, RunData]:
    """(the config with train.max_steps worked out from train.epochs when set, the run's data)."""
    data = scan(cfg.dataset, verify=True)
    _say_skipped(data, emit, "")
    if data.missing_captions:
        emit(ev.Warning(_missing_captions([item for item in data.items if not item.has_caption]), code="missing_captions"))
    reg = scan_regularization(cfg.dataset, verify=True)
    if reg is not None:
        _say_skipped(reg, emit, "the regularisation picture ")
        if reg.missing_captions:
            emit(ev.Warning(f"{budget_mod.plural(reg.missing_captions, 'regularisation picture')} "
                            f"{'has' if reg.missing_captions == 1 else 'have'} no caption file and train with an empty "
                            "caption; caption them as the base model would describe them (without the trigger).",
                            code="missing_captions"))
    if cfg.dataset.masked_loss and data.items and not any(item.mask for item in data.items):
        emit(ev.Warning(spell("{dataset.masked_loss} is on but no image has a mask (a same-name file in masks/ or an alpha "
                              "channel), so every picture trains whole."), code="no_masks"))

    cfg = _length_in_steps(cfg, data.items, reg, world_size, emit)
    train_items, held = validation.held_out(cfg, data.items)
    if held:
        emit(ev.Status("loading", f"{len(held)} image{'s' if len(held) != 1 else ''} held out for the validation loss"))
    items = list(train_items)
    if reg is not None:
        epoch = regularization_epoch(train_items, reg.items)
        items += epoch
        used = len(epoch)
        emit(ev.Status("loading", f"{budget_mod.plural(sum(x.repeats for x in epoch), 'regularisation sample')} per epoch "
                                  f"from {budget_mod.plural(used, 'picture')}"
                                  + (f" ({len(reg.items) - used:,} more than an epoch needs are left out)" if used < len(reg.items) else "")
                                  + f", weighted {cfg.dataset.regularization.loss_weight:g}"))
    images = dataclasses.replace(data, items=train_items)
    return cfg, RunData(images, items, held, reg)


def _length_in_steps(cfg: Config, items: list, reg: ScanResult | None, world_size: int, emit) -> Config:
    """The config with train.max_steps set to what train.epochs whole epochs take on these images.

    Worked out here, at the start, with the arithmetic the Settings tab shows (core/budget, which counts
    the batches as BatchPlan cuts them), so images added after setting "10 epochs" still train 10 epochs.
    The run folder's settings keep `epochs`, so a resume works out the same end again.
    """
    if cfg.train.epochs <= 0:
        return cfg
    b = budget_mod.budget_for(cfg, items, world_size, regularization=reg.items if reg else [])
    emit(ev.Status("loading", f"{budget_mod.plural(b.epochs, 'epoch')} = {budget_mod.plural(b.steps, 'step')}: "
                              f"{budget_mod.describe(b)}"))
    return cfg.replace(train={"max_steps": b.steps})
