import io
from pathlib import Path

import pytest
from PIL import Image

from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import ImageItem, scan
from lora_studio.core.errors import UserError


def image(path: Path, size=(32, 24), colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def caption(image_path: Path, text: str, ext=".txt") -> None:
    image_path.with_suffix(ext).write_text(text, encoding="utf-8")


def truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.fixture
def kohya(tmp_path):
    """root/10_mystyle/{a,b}.png, root/10_mystyle/sketches/c.jpg, root/3_extra/d.png, root/e.png."""
    root = tmp_path / "data"
    caption(image(root / "10_mystyle" / "a.png"), "mystyle, red\nsecond line")
    caption(image(root / "10_mystyle" / "b.png", (24, 32)), "\ufeffmystyle, tall")
    image(root / "10_mystyle" / "sketches" / "c.jpg")  # no caption: inherits 10 repeats and the folder trigger
    caption(image(root / "3_extra" / "d.png"), "extra")
    image(root / "e.png")  # no caption, no repeat folder
    return root


def test_kohya_folders_repeats_and_captions(kohya):
    result = scan(DatasetConfig(path=str(kohya), repeats=2))
    by_rel = {i.rel: i for i in result.items}
    assert list(by_rel) == ["e.png", "10_mystyle/a.png", "10_mystyle/b.png", "10_mystyle/sketches/c.jpg", "3_extra/d.png"]
    assert [by_rel[r].repeats for r in by_rel] == [2, 10, 10, 10, 3]
    a = by_rel["10_mystyle/a.png"]
    assert a.caption == "mystyle, red, second line" and a.has_caption
    assert a.path == kohya / "10_mystyle" / "a.png" and a.path.is_absolute()
    assert a.caption_path == kohya / "10_mystyle" / "a.txt"
    assert (a.width, a.height) == (32, 24)
    assert by_rel["10_mystyle/b.png"].caption == "mystyle, tall"  # BOM dropped
    assert (by_rel["10_mystyle/b.png"].width, by_rel["10_mystyle/b.png"].height) == (24, 32)
    c = by_rel["10_mystyle/sketches/c.jpg"]
    assert not c.has_caption and c.caption == "mystyle"  # kohya: the folder name is the caption
    assert c.caption_path == kohya / "10_mystyle" / "sketches" / "c.txt" and not c.caption_path.exists()
    assert by_rel["e.png"].caption == ""
    assert result.missing_captions == 2 and result.excluded == 0 and result.skipped == []
    assert result.samples_per_epoch == 2 + 30 + 3
    assert result.dataset_dirs() == {
        "data": {"n_repeats": 2, "img_count": 1},
        "10_mystyle": {"n_repeats": 10, "img_count": 3},
        "3_extra": {"n_repeats": 3, "img_count": 1},
    }


def test_default_caption_for_uncaptioned_images(kohya):
    result = scan(DatasetConfig(path=str(kohya), default_caption=" painting in mystyle "))
    by_rel = {i.rel: i for i in result.items}
    assert by_rel["e.png"].caption == "painting in mystyle"
    assert by_rel["10_mystyle/sketches/c.jpg"].caption == "painting in mystyle"
    assert by_rel["10_mystyle/a.png"].caption.startswith("mystyle, red")


def test_exclude_files_and_folders(kohya):
    result = scan(DatasetConfig(path=str(kohya), exclude=["10_mystyle/a.png", "10_mystyle\\sketches", "nothing.png"]))
    assert [i.rel for i in result.items] == ["e.png", "10_mystyle/b.png", "3_extra/d.png"]
    assert result.excluded == 2


def test_caption_extension(tmp_path):
    caption(image(tmp_path / "a.png"), "from caption file", ext=".caption")
    caption(tmp_path / "a.png", "from txt")
    item = scan(DatasetConfig(path=str(tmp_path), caption_extension=".caption")).items[0]
    assert item.caption == "from caption file" and item.caption_path.name == "a.caption"


def test_hidden_cache_and_project_output_folders_are_skipped(tmp_path):
    image(tmp_path / "keep.png")
    image(tmp_path / ".hidden" / "x.png")
    image(tmp_path / ".dotfile.png")
    image(tmp_path / "__pycache__" / "x.png")
    (tmp_path / "lora_studio.toml").write_text("schema_version = 1\n")  # the dataset sits in a project
    image(tmp_path / "runs" / "r1" / "samples" / "step_000200_p0_s42.png")
    image(tmp_path / "cache" / "thumb.png")
    (tmp_path / "notes.md").write_text("not an image")
    assert [i.rel for i in scan(DatasetConfig(path=str(tmp_path))).items] == ["keep.png"]


def test_runs_folder_outside_a_project_is_an_ordinary_folder(tmp_path):
    image(tmp_path / "runs" / "a.png")
    assert [i.rel for i in scan(DatasetConfig(path=str(tmp_path))).items] == ["runs/a.png"]


def test_root_named_like_a_repeat_folder(tmp_path):
    root = tmp_path / "5_mystyle"
    image(root / "a.png")
    result = scan(DatasetConfig(path=str(root), repeats=1))
    assert result.items[0].repeats == 5 and result.items[0].caption == "mystyle"
    assert result.dataset_dirs() == {"5_mystyle": {"n_repeats": 5, "img_count": 1}}


def test_bad_files_are_skipped_with_reasons(tmp_path):
    image(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    truncated_png(tmp_path / "cut.png")
    quick = scan(DatasetConfig(path=str(tmp_path)))
    assert [i.rel for i in quick.items] == ["cut.png", "good.png"]  # the header of cut.png is fine
    assert {p.name for p, _ in quick.skipped} == {"empty.png", "text.jpg"}
    full = scan(DatasetConfig(path=str(tmp_path)), verify=True)
    assert [i.rel for i in full.items] == ["good.png"]
    reasons = dict((p.name, r) for p, r in full.skipped)
    assert "truncated" in reasons["cut.png"] and "empty" in reasons["empty.png"]


def test_unreadable_caption_skips_the_image_with_a_reason(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    (tmp_path / "b.txt").write_bytes(b"caf\xe9")
    result = scan(DatasetConfig(path=str(tmp_path)))
    assert [i.rel for i in result.items] == ["a.png"]
    assert "UTF-8" in result.skipped[0][1]


def test_exif_rotation_in_sizes(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(tmp_path / "p.jpg", exif=exif)
    for verify in (False, True):
        item = scan(DatasetConfig(path=str(tmp_path)), verify=verify).items[0]
        assert (item.width, item.height) == (20, 40)


def test_missing_folder(tmp_path):
    with pytest.raises(UserError) as e:
        scan(DatasetConfig(path=str(tmp_path / "nope")))
    assert e.value.code == "dataset_not_found" and "nope" in e.value.message
    with pytest.raises(UserError) as e:
        scan(DatasetConfig(path=""))
    assert e.value.code == "dataset_not_found"


def test_empty_dataset(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "bad.png").write_text("x")
    with pytest.raises(UserError) as e:
        scan(DatasetConfig(path=str(tmp_path)))
    assert e.value.code == "empty_dataset"
    assert "holds no images that can be opened; add .png/.jpg/.webp files" in e.value.message


def test_everything_excluded(tmp_path):
    image(tmp_path / "a.png")
    with pytest.raises(UserError, match="excluded") as e:
        scan(DatasetConfig(path=str(tmp_path), exclude=["a.png"]))
    assert e.value.code == "empty_dataset"


def test_items_are_frozen(kohya):
    item = scan(DatasetConfig(path=str(kohya))).items[0]
    assert isinstance(item, ImageItem)
    with pytest.raises(AttributeError):
        item.caption = "changed"
