"""What each training step sees: a deterministic plan of bucketed batches, and cached encodings.

The batch order is a pure function of (seed, micro-batch index): epoch e shuffles with its own seeded RNG,
so a resumed run needs only the step number to continue exactly where it stopped, on one process or
several (process r of W takes every W-th micro-batch).

With dataset.masked_loss on, each image's mask (core/dataset.find_mask) goes through the same resize, crop
and flip as its pixels and is area-averaged down to the latent grid (a grey edge stays a fraction); it is
cached beside the latent and multiplies the per-pixel loss (losses.per_image_loss).

Regularisation pictures (dataset.regularization) are items like the images, batched and shuffled with them;
a batch holding any carries a per-sample `loss_weight`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from lora_studio.core import buckets as bucketing
from lora_studio.core.captions import process_caption
from lora_studio.core.config import Config
from lora_studio.core.dataset import ImageItem
from lora_studio.core.images import load_mask, load_rgb
from lora_studio.engine.training.cache import DiskCache, file_digest, make_key, model_identity


@dataclass(frozen=True)
class Slot:
    item: int  # index into the item list
    epoch: int
    key: int  # a per-sample seed for augmentations


class BatchPlan:
    def __init__(self, items: list[ImageItem], cfg: Config, world_size: int = 1):
        t = cfg.train
        self.items, self.cfg, self.world_size = items, cfg, world_size
        self.buckets = bucketing.buckets_for(cfg)
        self.bucket_of = [bucketing.nearest_bucket(it.width, it.height, self.buckets) for it in items]
        self.samples_per_epoch = sum(it.repeats for it in items)
        # The count core/budget shows and derives train.epochs' steps from; _epoch cuts exactly this many.
        self.batches_per_epoch = bucketing.batch_count(bucketing.bucket_counts(items, self.buckets).values(), t.batch_size)
        self.micro_per_step = world_size * t.gradient_accumulation
        self.has_regularization = any(it.regularization for it in items)

    def _epoch(self, epoch: int) -> list[list[int]]:
        # Kohya-style: each image `repeats` times, grouped by bucket, shuffled within the bucket, cut
        # into batches (a short last batch per bucket is kept), then the batches shuffled.
        rng = random.Random(self.cfg.train.seed * 1_000_003 + epoch)
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i, (it, b) in enumerate(zip(self.items, self.bucket_of)):
            by_bucket.setdefault(b, []).extend([i] * it.repeats)
        batches = []
        bs = self.cfg.train.batch_size
        for b in sorted(by_bucket):
            members = by_bucket[b]
            rng.shuffle(members)
            batches += [members[k : k + bs] for k in range(0, len(members), bs)]
        rng.shuffle(batches)
        return batches

    def epoch_of_step(self, step: int) -> int:
        """1-based epoch of an optimizer step (kohya and the UIs count epochs from 1)."""
        return (step * self.micro_per_step) // max(self.batches_per_epoch, 1) + 1

    def micro_batches(self, step: int, rank: int) -> list[list[Slot]]:
        """The micro-batches process `rank` trains on for optimizer step `step` (0-based)."""
        out = []
        cache: dict[int, list[list[int]]] = {}
        for j in range(self.cfg.train.gradient_accumulation):
            gi = step * self.micro_per_step + j * self.world_size + rank
            epoch, pos = divmod(gi, self.batches_per_epoch)
            if epoch not in cache:
                cache[epoch] = self._epoch(epoch)
            batch = cache[epoch][pos]
            out.append([Slot(i, epoch, hash((self.cfg.train.seed, gi, k)) & 0x7FFFFFFF) for k, i in enumerate(batch)])
        return out


def to_tensor(img) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_for_training(item: ImageItem, bucket, *, flip: bool, random_crop: bool, rng: random.Random):
    """(pixels [3,H,W] in [-1,1], original (h, w), crop top-left (top, left)) for one image."""
    px, original, crop, _ = load_with_mask(item, bucket, flip=flip, random_crop=random_crop, rng=rng, mask=False)
    return px, original, crop


def load_with_mask(item: ImageItem, bucket, *, flip: bool, random_crop: bool, rng: random.Random, mask: bool = True):
    """load_for_training's three, and the image's mask [1,H,W] in [0,1] at the same pixels (None when it
    has none, or mask=False). The mask takes the very same crop: the crop's draw from `rng` is replayed
    on a copy, so `rng` itself advances exactly as without a mask (a masked run stays reproducible)."""
    img = load_rgb(item.path)
    original = (img.height, img.width)
    m = None
    if mask and item.mask is not None:
        m = load_mask(item.mask, alpha=item.mask_is_alpha)
        if m.size != img.size:  # the doctor's mask_size: stretched over the picture
            m = m.resize(img.size, Image.Resampling.BILINEAR)
    state = rng.getstate()
    img, crop = bucketing.resize_and_crop(img, bucket, random_crop=random_crop, rng=rng)
    if m is not None:
        replay = random.Random()
        replay.setstate(state)
        m, _ = bucketing.resize_and_crop(m, bucket, random_crop=random_crop, rng=replay)
    if flip:
        img = ImageOps.mirror(img)
        m = ImageOps.mirror(m) if m is not None else None
    mask_tensor = None if m is None else torch.from_numpy(np.asarray(m, dtype=np.float32) / 255.0)[None]
    return to_tensor(img), original, crop, mask_tensor


def latent_mask(mask: torch.Tensor | None, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A pixel mask [1,H,W] averaged over each latent cell's pixels: [1,h,w]; ones (train everywhere) for None."""
    if mask is None:
        return torch.ones(1, *latent_hw)
    return F.adaptive_avg_pool2d(mask[None], tuple(latent_hw))[0]  # H, W are whole multiples of h, w: an area average


class Encodings:
    """Latents (and text embeddings) computed once per image, flipped copies too when flip is on."""

    def __init__(self, trainer, plan: BatchPlan, disk: DiskCache | None = None):
        self.trainer, self.plan, self.cfg = trainer, plan, plan.cfg
        self.disk = disk or DiskCache(None)
        m = self.cfg.model
        self._identity = model_identity(m.base, m.vae) if self.disk.root else ""
        d = self.cfg.dataset
        self.latents_cached = self.cfg.train.cache_latents and not d.random_crop
        # Shuffled tags or caption dropout change the text every epoch: then it cannot be cached.
        self.text_cached = (
            self.cfg.train.cache_text_encoder and not trainer.train_te and not d.shuffle_tags and d.caption_dropout == 0
        )
        self.masked = d.masked_loss
        self._latents: dict[tuple[int, bool], tuple[torch.Tensor, tuple, tuple, torch.Tensor | None]] = {}
        self._text: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def cache(self, progress=lambda done, total: None) -> None:
        flips = (False, True) if self.cfg.dataset.flip else (False,)
        total = len(self.plan.items) * (len(flips) if self.latents_cached else 0) + (len(self.plan.items) if self.text_cached else 0)
        done = 0
        for i, item in enumerate(self.plan.items):
            if self.latents_cached:
                digest = file_digest(item.path)
                for flip in flips:
                    self._latents[(i, flip)] = self._latent(item, digest, self.plan.bucket_of[i], flip)
                    done += 1
                    progress(done, total)
            if self.text_cached:
                self._text[i] = self._embedding(item.caption)
                done += 1
                progress(done, total)

    def _latent(self, item: ImageItem, digest: str, bucket, flip: bool):
        # The latent is a sample of the VAE's distribution, drawn with a seed from the image's content
        # (not its position in the list), so adding an image does not change the others' latents.
        seed = (int(digest[:12], 16) + self.cfg.train.seed * 2 + flip) % (2**63)
        # Masked: the entry holds the mask too, keyed by the mask file's bytes (an alpha mask is in `digest`).
        masking = ("mask", _mask_identity(item)) if self.masked else ()
        key = make_key("latent", digest, bucket, flip, seed, self._identity, *masking)
        # A latent encoded in tiles (the VAE ran out of memory) is kept under its own key, so a later run
        # with room for the whole image encodes it whole; a whole one is always preferred when cached.
        tiled_key = make_key("latent-tiled", digest, bucket, flip, seed, self._identity, *masking)
        for k in (key, tiled_key) if self.trainer.vae_tiled else (key,):
            hit = self.disk.get("latents", k)
            if hit is not None and (not self.masked or "mask" in hit):
                return hit["latent"], tuple(hit["original"].tolist()), tuple(hit["crop"].tolist()), hit.get("mask")
        px, orig, crop, mask = load_with_mask(item, bucket, flip=flip, random_crop=False, rng=random.Random(0), mask=self.masked)
        latent = self.trainer.encode_latents(px[None], torch.Generator().manual_seed(seed))[0]
        mask = latent_mask(mask, latent.shape[-2:]) if self.masked else None
        self.disk.put("latents", tiled_key if self.trainer.vae_tiled else key,
                      {"latent": latent, "original": torch.tensor(orig), "crop": torch.tensor(crop),
                       **({"mask": mask} if mask is not None else {})})
        return latent, orig, crop, mask

    def _embedding(self, caption: str):
        m = self.trainer.models
        key = make_key("text", caption, m.kind, self.cfg.model.clip_skip, self._identity)
        hit = self.disk.get("text", key)
        if hit is not None:
            return hit["embeds"], hit.get("pooled")
        with torch.no_grad():
            embeds, pooled = self.trainer.encode_text([caption])
        embeds, pooled = embeds[0].cpu(), None if pooled is None else pooled[0].cpu()
        self.disk.put("text", key, {"embeds": embeds, **({"pooled": pooled} if pooled is not None else {})})
        return embeds, pooled

    def batch(self, slots: list[Slot]) -> dict:
        d = self.cfg.dataset
        latents, captions, origs, crops, masks = [], [], [], [], []
        target = None
        for s in slots:
            rng = random.Random(s.key)
            flip = d.flip and rng.random() < 0.5
            item = self.plan.items[s.item]
            bucket = self.plan.bucket_of[s.item]
            if self.latents_cached:
                lat, orig, crop, mask = self._latents[(s.item, flip)]
            else:
                px, orig, crop, mask = load_with_mask(item, bucket, flip=flip, random_crop=d.random_crop, rng=rng, mask=self.masked)
                g = torch.Generator().manual_seed(s.key)
                lat = self.trainer.encode_latents(px[None], g)[0]
                mask = latent_mask(mask, lat.shape[-2:]) if self.masked else None
            latents.append(lat)
            masks.append(mask)
            origs.append(orig)
            crops.append(crop)
            target = (bucket[1], bucket[0])
            captions.append(process_caption(item.caption, shuffle_tags=d.shuffle_tags, keep_tokens=d.keep_tokens, dropout=d.caption_dropout, rng=rng))
        batch = {"latents": torch.stack(latents), "captions": captions}
        if self.plan.has_regularization:
            # dataset.regularization.loss_weight on its pictures (kohya's prior_loss_weight), 1 on the images.
            weight = d.regularization.loss_weight
            batch["loss_weight"] = torch.tensor([weight if self.plan.items[s.item].regularization else 1.0 for s in slots])
        if self.masked:
            batch["mask"] = torch.stack(masks)  # [B, 1, h, w]: broadcast over the latent channels
        if self.trainer.models.kind == "sdxl":
            from lora_studio.engine.training.conditioning import sdxl_time_ids

            batch["time_ids"] = sdxl_time_ids(origs, crops, target)
        if self.text_cached:
            batch["prompt_embeds"] = torch.stack([self._text[s.item][0] for s in slots])
            if self._text[slots[0].item][1] is not None:
                batch["pooled"] = torch.stack([self._text[s.item][1] for s in slots])
        elif not self.trainer.train_te:
            with torch.no_grad():
                embeds, pooled = self.trainer.encode_text(captions)
            batch["prompt_embeds"] = embeds
            if pooled is not None:
                batch["pooled"] = pooled
        return batch


def _mask_identity(item: ImageItem) -> str:
    if item.mask is None:
        return "none"
    if item.mask_is_alpha:
        return "alpha"
    try:
        return file_digest(item.mask)
    except OSError:
        return "unreadable"  # load_mask then says which file and why
