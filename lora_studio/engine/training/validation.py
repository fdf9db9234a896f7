"""The validation loss: held-out images, fixed noise and fixed timesteps, so two steps' values compare.

The training loss of a step depends on the noise and timesteps it happened to draw, so its curve is mostly
noise; here every held-out image is noised the same way at every evaluation — the same seeded noise at
the same evenly spaced timesteps — and only the LoRA changes between two values. A rise while the
training loss keeps falling is the classic sign of overfitting to the training images.
"""

from __future__ import annotations

import dataclasses

import torch

from lora_studio.core.config import Config
from lora_studio.core.dataset import ImageItem, scan, split_validation
from lora_studio.engine.training.data import BatchPlan, Encodings, Slot

# Evenly spaced over the schedule (the centres of 8 equal bins of 1000 steps).
TIMESTEPS = tuple(62 + 125 * k for k in range(8))


def held_out(cfg: Config, items: list[ImageItem]) -> tuple[list[ImageItem], list[ImageItem]]:
    """(trained on, held out): dataset.validation_split of the images, plus dataset.validation_path's."""
    d = cfg.dataset
    train, held = split_validation(items, d.validation_split, cfg.train.seed)
    if d.validation_path:
        own = dataclasses.replace(d, path=d.validation_path, exclude=[], validation_path="")
        held += scan(own, verify=True).items
    return train, held


def _plain(cfg: Config) -> Config:
    # No flips, no tag shuffling, no caption dropout: the held-out images look the same every time.
    # No masks either: the validation loss is over the whole picture, as it is plain MSE whatever train.loss
    # is, so runs with and without dataset.masked_loss compare on one scale (and share cached latents).
    return cfg.replace(dataset={"flip": False, "shuffle_tags": False, "caption_dropout": 0.0, "random_crop": False,
                                "masked_loss": False})


class Validator:
    def __init__(self, trainer, items: list[ImageItem], cfg: Config, disk=None):
        self.trainer, self.cfg = trainer, _plain(cfg)
        self.plan = BatchPlan(items, self.cfg)
        self.enc = Encodings(trainer, self.plan, disk)
        self.images = len(items)

    def cache(self) -> None:
        self.enc.cache()

    @torch.no_grad()
    def loss(self) -> float:
        t = self.trainer
        unet = t.unet
        was_training = unet.training
        unet.eval()
        total, count = 0.0, 0
        try:
            for i in range(self.images):
                batch = self.enc.batch([Slot(i, 0, 0)] * len(TIMESTEPS))
                shape = batch["latents"].shape
                g = torch.Generator().manual_seed(self.cfg.train.seed * 7919 + i)
                noise = torch.randn(shape, generator=g).to(t.device)
                steps = torch.tensor(TIMESTEPS, device=t.device)
                per_image = t.prediction_loss(batch, noise, steps)
                total += float(per_image.sum())
                count += len(TIMESTEPS)
        finally:
            unet.train(was_training)
        return total / max(count, 1)
