"""Captions: reading and writing the .txt sidecars, kohya's tag shuffling, and the editor's bulk edits.

A caption is comma-separated tags ("my style, 1girl, red hair") or a sentence; a sentence is one tag.
Reading folds a multi-line file into one line, each non-empty line a tag joined by ", ": some taggers
write one tag per line, and kohya reads only the first line, which silently drops the rest.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from lora_studio.core.atomic import atomic_write_text
from lora_studio.core.errors import UserError
from lora_studio.core.tokens import count_tokens



class Captioned(Protocol):
    """What the tag count reads of a dataset row (core/dataset's ImageItem; dataset imports this module,
    so naming ImageItem here would make an import circle)."""

    dataset_dir: str
    caption: str


class CaptionError(UserError):
    code = "bad_caption"


class CaptionNotUtf8(CaptionError):
    """A caption file in another encoding (read_legacy_caption may read it)."""


def split_tags(caption: str) -> list[str]:
    return [t for t in (part.strip() for part in caption.split(",")) if t]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def fold_lines(text: str) -> str:
    lines = [line.strip().strip(",").strip() for line in text.splitlines()]
    return ", ".join(line for line in lines if line)


def read_caption(path: Path) -> str | None:
    """The caption in a sidecar, folded to one line and stripped; None when there is no such file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as e:
        raise CaptionError(f"The caption file {path} cannot be read ({e.strerror or e}); check its permissions.") from None
    return fold_lines(_decode(data, path))


def _decode(data: bytes, path: Path) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Windows Notepad's "Unicode" is UTF-16 with a BOM
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig")  # tolerates the BOM some Windows editors write
    except UnicodeDecodeError:
        raise CaptionNotUtf8(
            f"The caption file {path} is not UTF-8 text; re-save it as UTF-8 in your text editor.",
            hint="Most editors offer UTF-8 under Save As → Encoding.",
        ) from None


LEGACY_ENCODING = "cp1252"  # what Notepad and most Windows editors wrote before UTF-8 was their default


def read_legacy_caption(path: Path) -> str | None:
    """The caption in a file that is not UTF-8, as an old Windows editor (Windows-1252) wrote it, folded
    like read_caption; None when the file is missing, is UTF-8 after all, or is not Windows-1252 either."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    try:
        _decode(data, Path(path))
        return None
    except CaptionNotUtf8:
        pass
    try:
        return fold_lines(data.decode(LEGACY_ENCODING))
    except UnicodeDecodeError:  # bytes Windows-1252 leaves undefined: some other encoding; only the artist knows
        return None


def write_caption(path: Path, text: str) -> None:
    """Atomically write a caption as one UTF-8 line with a trailing newline (the only write into a dataset)."""
    atomic_write_text(Path(path), fold_lines(text) + "\n")


def process_caption(caption: str, *, shuffle_tags: bool, keep_tokens: int, dropout: float, rng: random.Random) -> str:
    """The caption one training step sees, with kohya's semantics.

    With probability `dropout` the caption is dropped (""), teaching the model the style without words.
    When shuffling, the first `keep_tokens` tags (usually the trigger) stay in place and the rest are
    shuffled, so the model does not learn tag order. All randomness comes from rng, so a resumed run
    that restores rng's state sees the same captions.
    """
    if dropout > 0 and rng.random() < dropout:
        return ""
    if not shuffle_tags:
        return caption
    tags = split_tags(caption)
    keep = max(0, keep_tokens)
    head, tail = tags[:keep], tags[keep:]
    rng.shuffle(tail)
    return join_tags(head + tail)


def tag_frequency(items: Iterable[Captioned]) -> dict[str, dict[str, int]]:
    """{dataset dir: {tag: images carrying it}}, kohya's ss_tag_frequency (A1111 shows it as the tag list)."""
    counts: dict[str, Counter[str]] = {}
    for item in items:
        counter = counts.setdefault(item.dataset_dir, Counter())
        counter.update(set(split_tags(item.caption)))  # a tag written twice in one caption counts once
    return {d: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for d, c in counts.items()}


def _same_tag(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def has_trigger(caption: str, trigger: str) -> bool:
    """Whether the caption holds `trigger`: as a tag, or as words of a sentence caption ("a cat in
    tstyle"), ignoring case; a word that merely contains it ("tstyles") does not count."""
    trigger = trigger.strip()
    if not trigger:
        return True
    if any(_same_tag(t, trigger) for t in split_tags(caption)):
        return True
    return re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", caption, re.IGNORECASE) is not None


def add_trigger(caption: str, trigger: str) -> str:
    """The caption with `trigger` as its first tag (moved there if it was elsewhere)."""
    trigger = trigger.strip()
    if not trigger:
        return caption.strip()
    tags = split_tags(caption)
    if tags and _same_tag(tags[0], trigger):
        return join_tags(tags)
    return join_tags([trigger] + [t for t in tags if not _same_tag(t, trigger)])


def remove_trigger(caption: str, trigger: str) -> str:
    """The caption without the tag `trigger` (a whole tag, matched ignoring case; words inside other tags stay)."""
    trigger = trigger.strip()
    if not trigger:
        return caption.strip()
    return join_tags(t for t in split_tags(caption) if not _same_tag(t, trigger))


def find_replace(caption: str, find: str, replace: str, *, whole_tag: bool = False) -> str:
    """Plain-text replace; with whole_tag, only tags equal to `find` (ignoring case) are replaced.

    The result is re-split into tags, so a tag emptied by the replacement disappears with its comma.
    """
    if not find:
        return caption
    if whole_tag:
        return join_tags(t for t in (replace.strip() if _same_tag(t, find) else t for t in split_tags(caption)) if t)
    return join_tags(split_tags(caption.replace(find, replace)))


def trim_caption(caption: str, max_tokens: int) -> str:
    """The first whole tags that fit in max_tokens CLIP tokens (a lone over-long tag is cut by words)."""
    if count_tokens(caption) <= max_tokens:
        return caption
    kept: list[str] = []
    for tag in split_tags(caption):
        if count_tokens(join_tags(kept + [tag])) > max_tokens:
            break
        kept.append(tag)
    if kept:
        return join_tags(kept)
    words: list[str] = []
    for word in split_tags(caption)[0].split():
        if count_tokens(" ".join(words + [word])) > max_tokens:
            break
        words.append(word)
    return " ".join(words)
