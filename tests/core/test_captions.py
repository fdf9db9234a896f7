import random

import pytest

from lora_studio.core.captions import (
    CaptionError, add_trigger, find_replace, process_caption, read_caption, remove_trigger, split_tags,
    tag_frequency, trim_caption, write_caption,
)
from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.core.tokens import count_tokens
from PIL import Image


def test_split_tags_trims_and_drops_empties():
    assert split_tags(" my style,1girl , ,red hair,, ") == ["my style", "1girl", "red hair"]
    assert split_tags("") == []
    assert split_tags("a sentence without commas") == ["a sentence without commas"]


def test_read_caption_missing_bom_and_newlines(tmp_path):
    assert read_caption(tmp_path / "none.txt") is None
    (tmp_path / "bom.txt").write_bytes("\ufeffmy style, café\n".encode("utf-8"))
    assert read_caption(tmp_path / "bom.txt") == "my style, café"
    (tmp_path / "lines.txt").write_text("my style,\n1girl\r\n\n  red hair  \n")
    assert read_caption(tmp_path / "lines.txt") == "my style, 1girl, red hair"
    (tmp_path / "blank.txt").write_text("  \n\n")
    assert read_caption(tmp_path / "blank.txt") == ""
    (tmp_path / "utf16.txt").write_bytes("notepad, unicode".encode("utf-16"))
    assert read_caption(tmp_path / "utf16.txt") == "notepad, unicode"


def test_read_caption_rejects_non_utf8_with_a_fix(tmp_path):
    (tmp_path / "ansi.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CaptionError, match="ansi.txt is not UTF-8 text; re-save it as UTF-8") as e:
        read_caption(tmp_path / "ansi.txt")
    assert e.value.code == "bad_caption"


def test_write_caption_is_one_utf8_line_with_newline(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_caption(path, "my style, naïve\nsecond line")
    assert path.read_bytes() == "my style, naïve, second line\n".encode("utf-8")
    assert read_caption(path) == "my style, naïve, second line"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]  # no temp file left behind


def test_process_caption_keeps_first_tokens_and_shuffles_the_rest():
    caption = "trigger, a, b, c, d, e, f, g"
    rng = random.Random(0)
    outs = {process_caption(caption, shuffle_tags=True, keep_tokens=1, dropout=0.0, rng=rng) for _ in range(50)}
    assert len(outs) > 10
    for out in outs:
        tags = split_tags(out)
        assert tags[0] == "trigger" and sorted(tags) == sorted(split_tags(caption))
    assert process_caption(caption, shuffle_tags=False, keep_tokens=0, dropout=0.0, rng=rng) == caption


def test_process_caption_is_reproducible_from_the_rng_state():
    a = [process_caption("t, a, b, c, d", shuffle_tags=True, keep_tokens=0, dropout=0.3, rng=r)
         for r in [random.Random(7)] for _ in range(20)]
    b = [process_caption("t, a, b, c, d", shuffle_tags=True, keep_tokens=0, dropout=0.3, rng=r)
         for r in [random.Random(7)] for _ in range(20)]
    assert a == b


def test_process_caption_dropout_rate():
    rng = random.Random(1)
    outs = [process_caption("x, y", shuffle_tags=False, keep_tokens=0, dropout=0.25, rng=rng) for _ in range(4000)]
    assert 0.22 < outs.count("") / len(outs) < 0.28
    assert process_caption("x", shuffle_tags=True, keep_tokens=0, dropout=1.0, rng=rng) == ""


def test_add_and_remove_trigger():
    assert add_trigger("1girl, red hair", "mystyle") == "mystyle, 1girl, red hair"
    assert add_trigger("mystyle, 1girl", "mystyle") == "mystyle, 1girl"
    assert add_trigger("1girl, MyStyle, red", "mystyle") == "mystyle, 1girl, red"  # moved to the front
    assert add_trigger("", "mystyle") == "mystyle"
    assert remove_trigger("mystyle, 1girl, mystyle hat", "mystyle") == "1girl, mystyle hat"
    assert remove_trigger("mystyle", "mystyle") == ""


def test_find_replace():
    assert find_replace("1girl, red hair, red eyes", "red", "blue") == "1girl, blue hair, blue eyes"
    assert find_replace("1girl, red hair, smile", "red hair", "") == "1girl, smile"
    assert find_replace("red, red hair", "red", "blue", whole_tag=True) == "blue, red hair"
    assert find_replace("a cat on a mat", "cat", "dog") == "a dog on a mat"
    assert find_replace("unchanged", "", "x") == "unchanged"


def test_trim_caption_keeps_whole_tags_that_fit():
    caption = ", ".join(f"tag number {i}" for i in range(40))
    assert count_tokens(caption) > 75
    trimmed = trim_caption(caption, 75)
    assert count_tokens(trimmed) <= 75
    assert caption.startswith(trimmed) and split_tags(trimmed)[-1].startswith("tag number")
    sentence = " ".join(["word"] * 100)
    assert count_tokens(trim_caption(sentence, 75)) == 75


def test_tag_frequency_groups_by_dataset_dir(tmp_path):
    for folder, name, caption in [("10_style", "a", "style, red"), ("10_style", "b", "style, blue, blue"),
                                  ("2_extra", "c", "style, red")]:
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / folder / f"{name}.png")
        (tmp_path / folder / f"{name}.txt").write_text(caption)
    freq = tag_frequency(scan(DatasetConfig(path=str(tmp_path))).items)
    assert freq == {"10_style": {"style": 2, "blue": 1, "red": 1}, "2_extra": {"red": 1, "style": 1}}


def test_a_windows_1252_caption_is_read_as_such_only_when_it_is_not_utf8(tmp_path):
    from lora_studio.core.captions import CaptionNotUtf8, read_legacy_caption

    (tmp_path / "ansi.txt").write_bytes("café, naïve “quotes”\r\nsecond line".encode("cp1252"))
    with pytest.raises(CaptionNotUtf8) as e:
        read_caption(tmp_path / "ansi.txt")
    assert e.value.code == "bad_caption"
    assert read_legacy_caption(tmp_path / "ansi.txt") == "café, naïve “quotes”, second line"
    (tmp_path / "utf8.txt").write_text("café", encoding="utf-8")
    assert read_legacy_caption(tmp_path / "utf8.txt") is None  # nothing to convert
    (tmp_path / "other.txt").write_bytes(b"\x81\x8d\x8f\x90\x9d")  # bytes Windows-1252 leaves undefined
    assert read_legacy_caption(tmp_path / "other.txt") is None
    assert read_legacy_caption(tmp_path / "missing.txt") is None


@pytest.mark.parametrize("caption, found", [
    ("tstyle, a cat", True), ("a cat, TStyle", True), ("a cat drawn in tstyle style", True),
    ("tstyles, a cat", False), ("a cat", False), ("", False), ("my tstyle-ish cat", True),
])
def test_has_trigger_finds_the_word_as_a_tag_or_in_a_sentence(caption, found):
    from lora_studio.core.captions import has_trigger

    assert has_trigger(caption, "tstyle") is found
