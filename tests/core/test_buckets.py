import random

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.buckets import (
    batch_count, bucket_counts, bucket_info, buckets_for, make_buckets, nearest_bucket, resize_and_crop,
)
from lora_studio.core.config import Config, DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.core.errors import UserError


@pytest.mark.parametrize("resolution", [512, 768, 1024])
def test_buckets_follow_the_rules(resolution):
    buckets = make_buckets(resolution, 256, 2048 if resolution == 1024 else 1024, 64)
    assert (resolution, resolution) in buckets
    assert buckets == sorted(set(buckets))
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert w * h <= resolution * resolution
        assert 256 <= w <= 2048 and 256 <= h <= 2048
    assert all((h, w) in buckets for w, h in buckets)  # both orientations


def test_sd15_buckets_match_kohya():
    buckets = make_buckets(512)
    assert (512, 512) in buckets and (256, 1024) in buckets and (1024, 256) in buckets
    assert (448, 576) in buckets and (576, 448) in buckets and (384, 640) in buckets
    assert (512, 576) not in buckets  # area over 512²
    assert buckets == [
        (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576), (512, 512),
        (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
    ]  # sd-scripts' make_bucket_resolutions((512, 512), 256, 1024, 64)


def test_max_side_below_resolution_caps_the_square():
    buckets = make_buckets(1024, 256, 768, 64)
    assert (768, 768) in buckets and max(max(b) for b in buckets) == 768


def test_impossible_bucket_settings_are_user_errors():
    with pytest.raises(UserError) as e:
        make_buckets(512, 700, 800, 64)
    assert e.value.code == "bad_buckets"
    with pytest.raises(UserError):
        make_buckets(512, 300, 310, 64)


def test_nearest_bucket_by_aspect_ratio():
    buckets = make_buckets(512)
    assert nearest_bucket(1000, 1000, buckets) == (512, 512)
    assert nearest_bucket(3000, 2000, buckets) in {(640, 384), (576, 384)}
    w, h = nearest_bucket(2000, 3000, buckets)
    assert h > w
    assert nearest_bucket(100, 1000, buckets) == (256, 1024)  # beyond the extreme: the extreme


def test_nearest_bucket_tie_goes_to_the_larger_area():
    assert nearest_bucket(100, 100, [(256, 256), (512, 512), (448, 576)]) == (512, 512)
    assert nearest_bucket(900, 450, [(256, 128), (512, 256), (384, 384)]) == (512, 256)
    # 4:3 is nearer to 3:2 than to 1:1 in log ratio (0.118 vs 0.288)
    assert nearest_bucket(400, 300, [(512, 512), (576, 384)]) == (576, 384)


def test_resize_and_crop_centre():
    # 300×100 with a red centre third: bucket 128×128 scales to 384×128 and crops the middle.
    img = Image.new("RGB", (300, 100), (0, 0, 255))
    img.paste((255, 0, 0), (100, 0, 200, 100))
    out, (top, left) = resize_and_crop(img, (128, 128))
    assert out.size == (128, 128)
    assert (top, left) == (0, 128)
    r, g, b = out.getpixel((64, 64))
    assert r > 200 and b < 50


def test_resize_and_crop_gives_the_pixels_of_scaling_then_cropping():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)).resize((900, 600))
    out, (top, left) = resize_and_crop(img, (512, 512))
    reference = img.resize((768, 512), Image.Resampling.LANCZOS).crop((left, top, left + 512, top + 512))
    assert (top, left) == (0, 128)
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(reference, dtype=int)).max() <= 1


def test_resize_and_crop_covers_and_never_falls_short():
    for size in [(511, 777), (1000, 10), (10, 1000), (64, 64), (1920, 1080)]:
        out, (top, left) = resize_and_crop(Image.new("RGB", size), (448, 576))
        assert out.size == (448, 576) and top >= 0 and left >= 0


def test_random_crop_is_reproducible():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 400, 3), dtype=np.uint8))
    a = [resize_and_crop(img, (64, 64), random_crop=True, rng=random.Random(3))[1] for _ in range(3)]
    offsets = {resize_and_crop(img, (64, 64), random_crop=True, rng=r)[1] for r in [random.Random(5)] for _ in range(20)}
    assert len(set(a)) == 1
    assert len(offsets) > 5 and all(t == 0 and 0 <= left <= 64 for t, left in offsets)
    with pytest.raises(ValueError):
        resize_and_crop(img, (64, 64), random_crop=True)


def test_bucket_counts_include_repeats(tmp_path):
    for folder, name, size in [("10_a", "wide", (900, 600)), ("10_a", "square", (500, 500)), ("1_b", "sq2", (800, 800))]:
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.new("RGB", size).save(tmp_path / folder / f"{name}.png")
    items = scan(DatasetConfig(path=str(tmp_path))).items
    buckets = make_buckets(512)
    counts = bucket_counts(items, buckets)
    assert counts[(512, 512)] == 11
    assert sum(counts.values()) == 21
    info = bucket_info(items, buckets)
    assert sum(b["count"] for b in info["buckets"].values()) == 21
    assert [512, 512] in [b["resolution"] for b in info["buckets"].values()]
    assert 0 <= info["mean_img_ar_error"] < 0.1


def test_batch_count_cuts_each_bucket_on_its_own():
    assert batch_count([5, 3], 2) == 3 + 2  # not ceil(8 / 2) = 4: a batch never mixes shapes
    assert batch_count([4, 2], 2) == 3
    assert batch_count([7], 1) == 7 and batch_count([], 4) == 0


def test_buckets_for_a_config():
    cfg = Config().replace(train={"resolution": 768}, dataset={"min_bucket_side": 320, "max_bucket_side": 1280, "bucket_step": 64})
    assert buckets_for(cfg) == make_buckets(768, 320, 1280, 64)
