"""The style score: how much pictures look like the training set, in the base model's own VAE features.

A picture's *look* is summarised as the per-channel mean and standard deviation of the VAE encoder's
feature maps after each down block and the mid block — the statistics style transfer matches (Huang &
Belongie 2017, "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization"): they keep
colour, texture and line statistics and drop where things are. Every dimension is standardised over the
two reference sets, then a picture is projected on the line from the base model's samples (score 0) to
the training images as the VAE redraws them (score 1; see `as_drawn`):

    score(x) = <f(x) - mean(base), mean(data) - mean(base)> / |mean(data) - mean(base)|^2

so 0 means "looks like the base model", 1 "looks like the training set", and values between read as a
share of the way. Limits: it measures a look, not a subject (a LoRA that copies one training image
scores high too — the prompt score catches that); with a handful of pictures it is noisy; on a real model
the line is the 4-channel SD VAE's idea of style, which sees colour, contrast and linework well and
composition hardly at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from PIL import Image


def _pixels(images: Iterable[Image.Image], size: int) -> torch.Tensor:
    import numpy as np

    arrays = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (size, size):
            # The training set's pictures are any size; compare looks at one scale, centre-cropped.
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(img, dtype=np.float32))
    return torch.from_numpy(np.stack(arrays) / 127.5 - 1.0).permute(0, 3, 1, 2)


@torch.no_grad()
def features(vae, images: list[Image.Image], size: int, *, batch: int = 16) -> torch.Tensor:
    """One row per picture: channel means and standard deviations after each encoder stage (fp32)."""
    enc = vae.encoder
    device = next(vae.parameters()).device
    rows = []
    for start in range(0, len(images), batch):
        x = _pixels(images[start:start + batch], size).to(device, torch.float32)
        h = enc.conv_in(x.to(next(enc.parameters()).dtype))
        stats = []
        for block in [*enc.down_blocks, enc.mid_block]:
            h = block(h)
            f = h.float()
            stats += [f.mean(dim=(2, 3)), f.std(dim=(2, 3))]
        rows.append(torch.cat(stats, dim=1).cpu())
    return torch.cat(rows)


@dataclass
class StyleScale:
    """The line from the base model's look (0) to the training set's (1), in standardised features."""

    base_mean: torch.Tensor
    direction: torch.Tensor  # (mean(data) - mean(base)) / |...|^2, standardised
    scale: torch.Tensor  # per-dimension standard deviation over both reference sets

    @classmethod
    def fit(cls, base: torch.Tensor, data: torch.Tensor) -> "StyleScale":
        both = torch.cat([base, data])
        scale = both.std(dim=0).clamp_min(1e-6)
        b, d = base.mean(dim=0) / scale, data.mean(dim=0) / scale
        delta = d - b
        return cls(base.mean(dim=0), delta / delta.pow(2).sum().clamp_min(1e-12), scale)

    def score(self, feats: torch.Tensor) -> torch.Tensor:
        return ((feats - self.base_mean) / self.scale) @ self.direction


@torch.no_grad()
def as_drawn(vae, images: list[Image.Image], size: int, *, batch: int = 16) -> list[Image.Image]:
    """The pictures passed through the VAE (encode, decode): the training set as the model can draw it.

    Generated pictures always carry the VAE's own softness; raw training files do not. Compared raw, the
    line from base to data would mostly measure that softness, and a LoRA that has learned the style but
    draws through the same VAE would never reach 1.
    """
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    out = []
    for start in range(0, len(images), batch):
        x = _pixels(images[start:start + batch], size).to(device, dtype)
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.float().clamp(-1, 1)
        arr = ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        out += [Image.fromarray(a) for a in arr]
    return out


def style_scale(vae, base_images: list[Image.Image], data_images: list[Image.Image], size: int) -> StyleScale:
    data = as_drawn(vae, data_images, size)
    return StyleScale.fit(features(vae, base_images, size), features(vae, data, size))


def style_scores(vae, scale: StyleScale, images: list[Image.Image], size: int) -> list[float]:
    return [float(s) for s in scale.score(features(vae, images, size))]
