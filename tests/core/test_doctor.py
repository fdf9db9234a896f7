import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.core.doctor import Finding, apply_fix, check_dataset, dhash
from lora_studio.core.errors import UserError
from lora_studio.core.tokens import count_tokens


def picture(seed: int, size=(320, 256)) -> Image.Image:
    """A smooth random picture (real structure, so near copies stay near under re-encoding)."""
    small = np.random.default_rng(seed).integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def save(img: Image.Image, path: Path, caption: str | None = "mystyle, a picture", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def kinds(findings: list[Finding]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in findings:
        out.setdefault(f.kind, set()).add(f.path.name)
    return out


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "data"
    save(picture(1), root / "good.png")
    save(picture(2), root / "original.png")
    shutil.copy(root / "original.png", root / "zz_byte_copy.png")  # a copy: no caption needed to be flagged
    save(picture(3), root / "photo.png")
    save(picture(3).resize((300, 240)), root / "zz_near_copy.jpg", quality=80)  # re-encoded and resized
    save(picture(4, (100, 120)), root / "tiny.png")
    save(picture(5), root / "nocap.png", caption=None)
    save(picture(6), root / "blank.png", caption="  \n")
    save(picture(7), root / "long.png", caption=", ".join(f"detail number {i}" for i in range(30)))
    save(picture(8).convert("CMYK"), root / "print.jpg")
    buf = io.BytesIO()
    picture(9).save(buf, "PNG")
    (root / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "cut.txt").write_text("mystyle")
    (root / "notes.png").write_text("not a picture")
    return root


def test_finds_every_kind_of_problem(messy):
    cfg = DatasetConfig(path=str(messy), default_caption="mystyle")
    found = kinds(check_dataset(cfg, resolution=400))
    assert found["unreadable"] == {"cut.png", "notes.png"}
    assert found["duplicate"] == {"zz_byte_copy.png", "zz_near_copy.jpg"}
    assert found["too_small"] == {"tiny.png"}
    assert found["missing_caption"] == {"nocap.png", "zz_byte_copy.png"}
    assert found["empty_caption"] == {"blank.png"}
    assert found["long_caption"] == {"long.png"}
    assert found["odd_mode"] == {"print.jpg"}
    assert "good.png" not in set().union(*found.values())


def test_messages_and_fixes_are_for_an_artist(messy):
    findings = check_dataset(DatasetConfig(path=str(messy), default_caption="mystyle"), resolution=400)
    by = {(f.kind, f.path.name): f for f in findings}
    assert "truncated" in by["unreadable", "cut.png"].message and by["unreadable", "cut.png"].fix == "exclude"
    dup = by["duplicate", "zz_byte_copy.png"]
    assert "same file as original.png" in dup.message and dup.fix == "exclude"
    assert "nearly the same picture as photo.png" in by["duplicate", "zz_near_copy.jpg"].message
    assert "100×120" in by["too_small", "tiny.png"].message
    long = by["long_caption", "long.png"]
    assert f"{count_tokens((messy / 'long.txt').read_text())} tokens" in long.message and long.fix == "trim_caption"
    assert by["missing_caption", "nocap.png"].fix == "write_default_caption"
    assert "CMYK" in by["odd_mode", "print.jpg"].message and by["odd_mode", "print.jpg"].fix == ""
    assert all(f.path.is_absolute() for f in findings)


def test_different_flat_colours_are_not_duplicates(tmp_path):
    save(Image.new("RGB", (300, 300), (255, 0, 0)), tmp_path / "red.png")
    save(Image.new("RGB", (300, 300), (0, 0, 255)), tmp_path / "blue.png")
    assert dhash(Image.open(tmp_path / "red.png")) == dhash(Image.open(tmp_path / "blue.png"))
    assert check_dataset(DatasetConfig(path=str(tmp_path)), resolution=512) == []


def test_different_pictures_are_not_duplicates(tmp_path):
    for i in range(12):
        save(picture(100 + i), tmp_path / f"{i:02}.png")
    assert check_dataset(DatasetConfig(path=str(tmp_path)), resolution=512) == []


def test_excluded_images_are_not_checked_and_progress_is_reported(messy):
    cfg = DatasetConfig(path=str(messy), default_caption="mystyle", exclude=["cut.png", "notes.png"])
    calls = []
    found = kinds(check_dataset(cfg, 512, progress=lambda done, total: calls.append((done, total))))
    assert "unreadable" not in found
    assert calls == [(i, 10) for i in range(1, 11)]


def test_fix_exclude_leaves_the_file_alone(messy):
    cfg = DatasetConfig(path=str(messy), default_caption="mystyle")
    before = (messy / "cut.png").read_bytes()
    finding = next(f for f in check_dataset(cfg, 512) if f.path.name == "cut.png")
    new_cfg = apply_fix(finding, cfg)
    assert new_cfg.exclude == ["cut.png"] and cfg.exclude == []
    assert apply_fix(finding, new_cfg).exclude == ["cut.png"]  # not added twice
    assert (messy / "cut.png").read_bytes() == before
    assert "cut.png" not in {i.rel for i in scan(new_cfg).items}


def test_fix_write_default_caption_uses_the_folder_trigger(tmp_path):
    root = tmp_path / "data"
    save(picture(1), root / "10_mystyle" / "a.png", caption=None)
    save(picture(2), root / "10_mystyle" / "b.png", caption="")
    cfg = DatasetConfig(path=str(root))
    findings = check_dataset(cfg, 256)
    assert {f.kind for f in findings} == {"missing_caption", "empty_caption"}
    for f in findings:
        assert apply_fix(f, cfg) == cfg
    assert (root / "10_mystyle" / "a.txt").read_text(encoding="utf-8") == "mystyle\n"
    assert (root / "10_mystyle" / "b.txt").read_text(encoding="utf-8") == "mystyle\n"
    assert check_dataset(cfg, 256) == []


def test_fix_write_default_caption_never_overwrites_a_typed_caption(tmp_path):
    save(picture(1), tmp_path / "a.png", caption=None)
    cfg = DatasetConfig(path=str(tmp_path), default_caption="mystyle")
    finding = check_dataset(cfg, 256)[0]
    (tmp_path / "a.txt").write_text("typed meanwhile")
    apply_fix(finding, cfg)
    assert (tmp_path / "a.txt").read_text() == "typed meanwhile"


def test_missing_caption_without_any_default_has_no_automatic_fix(tmp_path):
    save(picture(1), tmp_path / "a.png", caption=None)
    cfg = DatasetConfig(path=str(tmp_path))
    (finding,) = check_dataset(cfg, 256)
    assert finding.kind == "missing_caption" and finding.fix == ""
    assert "set a default caption" in finding.message
    with pytest.raises(UserError, match="default_caption"):
        apply_fix(Finding("missing_caption", finding.path, "", "write_default_caption"), cfg)


def test_fix_trim_caption(tmp_path):
    caption = "mystyle, " + ", ".join(f"detail number {i}" for i in range(30))
    save(picture(1), tmp_path / "a.png", caption=caption)
    cfg = DatasetConfig(path=str(tmp_path))
    (finding,) = check_dataset(cfg, 256)
    apply_fix(finding, cfg)
    trimmed = (tmp_path / "a.txt").read_text(encoding="utf-8").strip()
    assert count_tokens(trimmed) <= 75 and caption.startswith(trimmed) and trimmed.startswith("mystyle, detail")
    assert check_dataset(cfg, 256) == []


def test_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        check_dataset(DatasetConfig(path=str(tmp_path)), 512)
    assert e.value.code == "empty_dataset"


def test_a_windows_1252_caption_is_shown_as_read_and_resaved_as_utf8(tmp_path):
    save(picture(1), tmp_path / "a.png", caption=None)
    (tmp_path / "a.txt").write_bytes("mystyle, café crème".encode("cp1252"))
    save(picture(2), tmp_path / "b.png")
    cfg = DatasetConfig(path=str(tmp_path))
    (finding,) = check_dataset(cfg, 256)
    assert finding.kind == "not_utf8" and finding.fix == "resave_utf8"
    assert 'it says: "mystyle, café crème". Re-save it as UTF-8' in finding.message
    assert "left out of training" in finding.message
    assert scan(cfg).skipped  # until the fix, training skips it with a clear message (kept)
    apply_fix(finding, cfg)
    assert (tmp_path / "a.txt").read_bytes() == "mystyle, café crème\n".encode("utf-8")
    assert check_dataset(cfg, 256) == [] and not scan(cfg).skipped


def test_a_caption_changed_since_the_check_is_not_resaved(tmp_path):
    save(picture(1), tmp_path / "a.png", caption=None)
    (tmp_path / "a.txt").write_bytes("café".encode("cp1252"))
    cfg = DatasetConfig(path=str(tmp_path))
    (finding,) = check_dataset(cfg, 256)
    (tmp_path / "a.txt").write_bytes("thé".encode("cp1252"))  # edited in another program meanwhile
    with pytest.raises(UserError) as e:
        apply_fix(finding, cfg)
    assert e.value.code == "caption_changed"
    assert (tmp_path / "a.txt").read_bytes() == "thé".encode("cp1252")


def test_a_caption_in_no_known_encoding_has_no_fix(tmp_path):
    save(picture(1), tmp_path / "a.png", caption=None)
    (tmp_path / "a.txt").write_bytes(b"\x81\x8d\x90")
    (finding,) = check_dataset(DatasetConfig(path=str(tmp_path)), 256)
    assert finding.kind == "unreadable" and finding.fix == "" and "not UTF-8" in finding.message


def test_a_trigger_word_in_no_caption_is_found_and_added(tmp_path):
    for i in range(3):
        save(picture(i), tmp_path / f"{i}.png", caption=f"a picture, number {i}")
    save(picture(9), tmp_path / "nocap.png", caption=None)  # has its own finding; never given a caption here
    cfg = DatasetConfig(path=str(tmp_path))
    assert [f.kind for f in check_dataset(cfg, 256)] == ["missing_caption"]  # no trigger word set: no check
    found = [f for f in check_dataset(cfg, 256, trigger="zkstyle") if f.kind == "trigger_missing"]
    (finding,) = found
    assert finding.message.startswith('The trigger word "zkstyle" is in none of the 3 captions')
    assert finding.fix == "add_trigger" and len(finding.paths) == 3 and finding.path == tmp_path.resolve()
    apply_fix(finding, cfg)
    assert (tmp_path / "0.txt").read_text(encoding="utf-8") == "zkstyle, a picture, number 0\n"
    assert not (tmp_path / "nocap.txt").exists()
    assert not [f for f in check_dataset(cfg, 256, trigger="zkstyle") if f.kind == "trigger_missing"]


def test_a_trigger_word_in_only_some_captions_names_the_others(tmp_path):
    for i in range(6):
        save(picture(i), tmp_path / f"{i}.png", caption="zkstyle, a picture" if i < 1 else f"picture {i}")
    cfg = DatasetConfig(path=str(tmp_path))
    (finding,) = [f for f in check_dataset(cfg, 256, trigger="zkstyle") if f.kind == "trigger_missing"]
    assert finding.message.startswith('The trigger word "zkstyle" is missing from 5 of the 6 captions (1.png, 2.png, 3.png and 2 more)')
    (tmp_path / "5.txt").write_text("a sentence about zkstyle", encoding="utf-8")  # typed since the check
    apply_fix(finding, cfg)
    assert (tmp_path / "1.txt").read_text(encoding="utf-8") == "zkstyle, picture 1\n"
    assert (tmp_path / "5.txt").read_text(encoding="utf-8") == "a sentence about zkstyle"  # left as typed
    assert (tmp_path / "0.txt").read_text(encoding="utf-8") == "zkstyle, a picture"
