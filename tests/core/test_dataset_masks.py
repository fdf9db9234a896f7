"""Training masks in the dataset scan (dataset.masked_loss): which file a mask comes from, and the health check's words on them."""

from pathlib import Path

import numpy as np
from PIL import Image

from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import find_mask, scan
from lora_studio.core.doctor import check_dataset
from lora_studio.core.images import load_mask


def picture(seed: int, size=(96, 64), mode="RGB") -> Image.Image:
    small = np.random.default_rng(seed).integers(0, 255, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).convert(mode)


def half_mask(size=(96, 64)) -> Image.Image:
    m = Image.new("L", size, 0)
    m.paste(255, (0, 0, size[0] // 2, size[1]))
    return m


def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "masks").mkdir(parents=True)
    picture(1).save(root / "plain.png")  # no mask
    picture(2).save(root / "filed.png")
    half_mask().save(root / "masks" / "filed.png")
    cut = picture(3, mode="RGBA")
    cut.putalpha(half_mask())
    cut.save(root / "cutout.png")  # its alpha channel is the mask
    both = picture(4, mode="RGBA")
    both.putalpha(Image.new("L", (96, 64), 0))
    both.save(root / "both.png")
    Image.new("L", (96, 64), 255).save(root / "masks" / "both.webp")  # the file wins over the alpha
    for p in root.glob("*.png"):
        p.with_suffix(".txt").write_text("mystyle, a picture", encoding="utf-8")
    return root


def test_each_image_finds_its_mask_and_the_masks_folder_never_trains(tmp_path):
    root = dataset(tmp_path)
    items = {it.rel: it for it in scan(DatasetConfig(path=str(root), masked_loss=True)).items}
    assert set(items) == {"both.png", "cutout.png", "filed.png", "plain.png"}  # masks/*.png are not training images
    assert items["plain.png"].mask is None
    assert items["filed.png"].mask == root / "masks" / "filed.png" and not items["filed.png"].mask_is_alpha
    assert items["cutout.png"].mask == items["cutout.png"].path and items["cutout.png"].mask_is_alpha
    assert items["both.png"].mask == root / "masks" / "both.webp"
    assert np.asarray(load_mask(items["both.png"].mask, alpha=False)).min() == 255
    cut = np.asarray(load_mask(items["cutout.png"].mask, alpha=True))
    assert cut.shape == (64, 96) and cut[:, :40].min() == 255 and cut[:, 56:].max() == 0
    # Off, no mask is looked for (the scan stays as fast as before), and the masks folder still does not train.
    off = scan(DatasetConfig(path=str(root))).items
    assert len(off) == 4 and all(it.mask is None for it in off)
    assert find_mask(root / "plain.png") is None


def test_the_health_check_names_bad_masks_and_unmasked_images(tmp_path):
    root = dataset(tmp_path)
    half_mask((48, 32)).save(root / "masks" / "plain.png")  # half the size of its image
    picture(5).save(root / "broken.png")
    (root / "broken.txt").write_text("mystyle, a picture", encoding="utf-8")
    (root / "masks" / "broken.png").write_bytes(b"not a png at all")
    picture(6).save(root / "lone.png")
    (root / "lone.txt").write_text("mystyle, a picture", encoding="utf-8")
    findings = check_dataset(DatasetConfig(path=str(root), masked_loss=True), 64)
    by_kind = {}
    for f in findings:
        by_kind.setdefault(f.kind, []).append(f)
    [size] = by_kind["mask_size"]
    assert size.path.name == "plain.png"
    assert size.message == ("The mask masks/plain.png is 48×32 pixels but plain.png is 96×64; it is stretched to fit, "
                            "so it may not line up. Make the mask the same size as its image.")
    [bad] = by_kind["mask_unreadable"]
    assert bad.path.name == "broken.png" and bad.fix == "exclude"
    assert bad.message.startswith("The mask masks/broken.png of broken.png is not an image that can be opened")
    assert "stops at it" in bad.message
    [missing] = by_kind["mask_missing"]
    assert [p.name for p in missing.paths] == ["lone.png"]
    assert "1 of the 6 images (lone.png) have no mask" in missing.message and "{dataset.masked_loss}" in missing.message
    # The cut-out's transparency is its mask now, not white.
    [note] = [f for f in by_kind["odd_mode"] if f.path.name == "cutout.png"]
    assert "masked loss leaves out of training" in note.message
    # Off, masks are not read at all.
    off = check_dataset(DatasetConfig(path=str(root)), 64)
    assert not {f.kind for f in off} & {"mask_size", "mask_unreadable", "mask_missing"}
