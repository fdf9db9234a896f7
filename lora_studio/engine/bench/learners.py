"""The two recipes of the learning benchmark (`engine.bench.learning`), training on the same dataset.

Both learners take one optimizer step at a time on the micro-batches `BatchPlan` cuts for that step, so at
every step both sides have trained on exactly the same images in the same order (the data loader's order
is not part of either recipe). What each does with a batch is its own recipe:

- `OursLearner`: `engine.training.step.Trainer`, latents and caption embeddings encoded once by
  `engine.training.data.Encodings`, as `engine.training.loop` does;
- `ReferenceLearner`: `engine.bench.reference.ReferenceLoop` (diffusers' `train_text_to_image_lora.py`):
  the pixels VAE-encoded and the captions run through the text encoder at every step.

Decoding the pictures (ours: while caching; the reference: once, up front, as a data loader would hand
them over) is outside `step`, so `step`'s time is the recipe's own.
"""

from __future__ import annotations

import random

import torch

from lora_studio.core.captions import process_caption
from lora_studio.core.config import Config
from lora_studio.core.dataset import ImageItem
from lora_studio.engine.bench.sides import _lora_settings, _optimizer_settings
from lora_studio.engine.models.load import Models, load_models
from lora_studio.engine.training.data import BatchPlan, Encodings, load_for_training
from lora_studio.engine.training.cache import DiskCache
from lora_studio.engine.training.step import Trainer, resolve_precision


def _accelerator(cfg: Config, device: torch.device):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed, _ = resolve_precision(cfg, device)
    # accelerate keeps its state in a singleton: forget an earlier one's precision (as the training loop does).
    AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed, gradient_accumulation_steps=cfg.train.gradient_accumulation,
                       cpu=device.type != "cuda")


class Learner:
    """One recipe: `step(i)` trains optimizer step i; `unet` / `text_encoders` / `models` draw its samples."""

    name: str
    models: Models
    accelerator: object
    plan: BatchPlan

    def step(self, i: int) -> torch.Tensor | float:
        """Train optimizer step i; its loss (a tensor where the recipe does not read it back every step)."""
        raise NotImplementedError

    @property
    def lr(self) -> float:
        raise NotImplementedError

    @property
    def unet(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return list(self.models.text_encoders)

    def settings(self) -> dict:
        raise NotImplementedError


class OursLearner(Learner):
    name = "lora_studio"

    def __init__(self, cfg: Config, items: list[ImageItem], device: torch.device):
        torch.manual_seed(cfg.train.seed)  # as engine.training.loop seeds a run
        self.cfg = cfg
        self.accelerator = _accelerator(cfg, device)
        _, weight_dtype = resolve_precision(cfg, device)
        self.models = load_models(cfg.model, dtype=weight_dtype)
        self.trainer = Trainer(self.models, cfg, self.accelerator)
        self.plan = BatchPlan(items, cfg, 1)
        self.encodings = Encodings(self.trainer, self.plan, DiskCache(None))  # no disk cache: every run encodes afresh
        self.encodings.cache()
        # The VAE and text encoder stay where they are (the loop moves them off the GPU after caching and back
        # to sample: a memory saving that changes nothing the benchmark measures, at 64 px).
        self.trainer.ready()

    def step(self, i: int) -> torch.Tensor:
        # The loss stays on the device: our loop reads it back every log_every steps, not every step.
        losses = [self.trainer.train_step(self.encodings.batch(slots)) for slots in self.plan.micro_batches(i, 0)]
        return torch.stack(losses).mean()

    @property
    def lr(self) -> float:
        return self.trainer.lr

    @property
    def unet(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.trainer.unet)

    def settings(self) -> dict:
        t = self.trainer
        return {**_lora_settings(t.models.unet), **_optimizer_settings(t.optimizer),
                "mixed_precision": self.accelerator.mixed_precision}


class ReferenceLearner(Learner):
    name = "reference"

    def __init__(self, cfg: Config, items: list[ImageItem], device: torch.device):
        from lora_studio.engine.bench.reference import ReferenceLoop

        torch.manual_seed(cfg.train.seed)  # the scripts' `set_seed(args.seed)`: the noise comes from torch's global RNG
        self.cfg = cfg
        self.accelerator = _accelerator(cfg, device)
        self.models = load_models(cfg.model, dtype=torch.float32)  # the recipe casts the frozen weights itself
        self.loop = ReferenceLoop(self.models, cfg, self.accelerator)
        self.plan = BatchPlan(items, cfg, 1)
        # The pictures as the scripts' transforms hand them over (resized and centre-cropped, no flip), decoded once.
        self.pictures = [load_for_training(item, self.plan.bucket_of[k], flip=False, random_crop=False, rng=random.Random(0))
                         for k, item in enumerate(items)]

    def _batch(self, slots) -> dict:
        d = self.cfg.dataset
        px, sizes, crops, captions = [], [], [], []
        for s in slots:
            pixels, size, crop = self.pictures[s.item]
            px.append(pixels)
            sizes.append(size)
            crops.append(crop)
            captions.append(process_caption(self.plan.items[s.item].caption, shuffle_tags=d.shuffle_tags, keep_tokens=d.keep_tokens,
                                            dropout=d.caption_dropout, rng=random.Random(s.key)))
        return self.loop.prepare_batch(torch.stack(px), captions, sizes, crops)

    def step(self, i: int) -> float:
        losses = [self.loop.train_step(self._batch(slots)) for slots in self.plan.micro_batches(i, 0)]
        return sum(losses) / len(losses)

    @property
    def lr(self) -> float:
        return self.loop.lr_scheduler.get_last_lr()[0]

    @property
    def unet(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.loop.unet)

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return list(self.loop.text_encoders)

    def settings(self) -> dict:
        lp = self.loop
        return {**_lora_settings(lp.models.unet), **_optimizer_settings(lp.optimizer),
                "mixed_precision": self.accelerator.mixed_precision}

