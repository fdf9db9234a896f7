"""Aspect-ratio buckets (NovelAI's scheme, as kohya's sd-scripts builds them).

Instead of cropping every picture to a square, each image trains at the bucket whose shape is closest
to its own: a set of (width, height) pairs with sides a multiple of `step` and an area no larger than
resolution², so a tall portrait keeps its composition and a batch still shares one shape.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from PIL import Image

from lora_studio.core.config import Config, smallest_bucket_side
from lora_studio.core.errors import UserError

if TYPE_CHECKING:
    from lora_studio.core.dataset import ImageItem

Bucket = tuple[int, int]  # (width, height)


def make_buckets(resolution: int, min_side: int = 256, max_side: int = 1024, step: int = 64) -> list[Bucket]:
    """Every (w, h) with sides multiples of step in [min_side, max_side] and w·h ≤ resolution², sorted.

    For each width, the tallest height that fits the area (kohya's make_bucket_resolutions), both
    orientations, plus the largest square.
    """
    if step <= 0 or resolution < step:
        raise UserError(
            f"The bucket step {step} does not fit the resolution {resolution}; use a step like 64 and a resolution like 512.",
            code="bad_buckets",
        )
    low = math.ceil(min_side / step) * step
    high = (max_side // step) * step
    if low > high:
        raise UserError(
            f"Bucket sides from {min_side} to {max_side} px leave no side that is a multiple of {step}; lower "
            "{dataset.min_bucket_side} or raise {dataset.max_bucket_side}.",
            code="bad_buckets",
        )
    max_area = resolution * resolution
    square = min(high, (resolution // step) * step)
    buckets: set[Bucket] = set()
    if square >= low:
        buckets.add((square, square))
    for width in range(low, high + 1, step):
        height = min(high, (max_area // width) // step * step)
        if height >= low:
            buckets.add((width, height))
            buckets.add((height, width))
    if not buckets:
        raise UserError(
            f"No bucket of at least {low} px per side fits {resolution}×{resolution} pixels; "
            "lower {dataset.min_bucket_side} or raise {train.resolution}.",
            code="bad_buckets",
        )
    return sorted(buckets)


def buckets_for(cfg: Config) -> list[Bucket]:
    """The buckets a config trains with: train.resolution and the dataset.*_bucket_* keys (an automatic
    smallest side follows the resolution)."""
    d = cfg.dataset
    return make_buckets(cfg.train.resolution, smallest_bucket_side(cfg), d.max_bucket_side, d.bucket_step)


def nearest_bucket(width: int, height: int, buckets: Iterable[Bucket]) -> Bucket:
    """The bucket closest in aspect ratio (distance in log ratio, so 2:1 and 1:2 are equally far from 1:1).

    On a tie the larger bucket wins: it keeps more of the picture's detail.
    """
    target = math.log(width / height)

    def key(b: Bucket) -> tuple[float, int]:
        return round(abs(math.log(b[0] / b[1]) - target), 12), -(b[0] * b[1])

    return min(buckets, key=key)


def resize_and_crop(
    img: Image.Image, bucket: Bucket, *, random_crop: bool = False, rng: random.Random | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """img scaled to cover the bucket (LANCZOS) and cropped to it; also the crop's (top, left).

    The offset is in resized pixels: SDXL conditions on it ("crop_coords_top_left").
    """
    bw, bh = bucket
    w, h = img.size
    scale = max(bw / w, bh / h)
    # Rounding may leave a side one pixel short of the bucket; never go below it.
    new_w, new_h = max(bw, round(w * scale)), max(bh, round(h * scale))
    spare_x, spare_y = new_w - bw, new_h - bh
    if random_crop:
        if rng is None:
            raise ValueError("random_crop needs an rng, so a resumed run crops the same way")
        left, top = rng.randint(0, spare_x), rng.randint(0, spare_y)
    else:
        left, top = spare_x // 2, spare_y // 2
    if (new_w, new_h) == (w, h):
        out = img.crop((left, top, left + bw, top + bh)) if spare_x or spare_y else img
    else:
        # Resample only the region that survives the crop: a 1000×10 strip in a 448×576 bucket would
        # otherwise be scaled to 57,600×576 first. Same pixels, a fraction of the work and memory.
        sx, sy = new_w / w, new_h / h
        box = (left / sx, top / sy, (left + bw) / sx, (top + bh) / sy)
        out = img.resize((bw, bh), Image.Resampling.LANCZOS, box=box)
    return out, (top, left)


def bucket_counts(items: Iterable[ImageItem], buckets: list[Bucket]) -> dict[Bucket, int]:
    """{bucket: samples per epoch} (images × repeats), the buckets in use only, in bucket order."""
    counts: dict[Bucket, int] = {}
    for item in items:
        b = nearest_bucket(item.width, item.height, buckets)
        counts[b] = counts.get(b, 0) + item.repeats
    return dict(sorted(counts.items()))


def batch_count(samples_per_bucket: Iterable[int], batch_size: int) -> int:
    """Batches in one epoch: each bucket's samples cut into batches of batch_size, the last one per bucket
    short (a batch shares one shape, so buckets never mix), i.e. Σ ceil(n / batch_size).

    The engine's BatchPlan cuts its epochs by this count and the step budget counts with it.
    """
    return sum(math.ceil(n / batch_size) for n in samples_per_bucket if n > 0)


def bucket_info(items: Iterable[ImageItem], buckets: list[Bucket]) -> dict:
    """kohya's ss_bucket_info: {"buckets": {"0": {"resolution": [w, h], "count": n}}, "mean_img_ar_error": e}."""
    items = list(items)
    counts = bucket_counts(items, buckets)
    errors = []
    for item in items:
        bw, bh = nearest_bucket(item.width, item.height, buckets)
        errors.append(abs(bw / bh - item.width / item.height))
    return {
        "buckets": {str(i): {"resolution": [w, h], "count": n} for i, ((w, h), n) in enumerate(counts.items())},
        "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0,
    }
