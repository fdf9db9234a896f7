"""The dataset health check run before training: every image decoded, every caption read.

It reports what would crash a run hours in (a truncated file), what would quietly spoil it (tiny
images, duplicates that weigh double, captions past CLIP's 75-token window, missing captions), and
what is converted automatically (CMYK, 16-bit, palette, transparency, EXIF rotation), and whether the
trigger word is in the captions. With dataset.masked_loss on it also reads every mask: one that cannot be
read stops a run, one of another size than its image is stretched to it, and images without a mask train
everywhere. The regularisation folder (dataset.regularization) has a check of its own,
`check_regularization`: its pictures decoded and captioned like the images, and none of its captions may
hold the trigger word (a regularisation picture shows the model *without* the style). Fixes never touch an image: "exclude" only adds the file to
`dataset.exclude`; the caption fixes edit the .txt.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lora_studio.core.captions import (
    CaptionError, CaptionNotUtf8, add_trigger, has_trigger, read_caption, read_legacy_caption, trim_caption, write_caption,
)
from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import (
    caption_path_for, dataset_root, default_caption_for, empty_dataset_error, find_mask, is_excluded, iter_image_files,
    normalize_rel, regularization_dataset, regularization_folders, scan_regularization,
)
from lora_studio.core.errors import UserError
from lora_studio.core.images import ImageError, conversion_notes, load_mask, load_rgb
from lora_studio.core.tokens import MAX_CAPTION_TOKENS, count_tokens

KINDS = ("unreadable", "not_utf8", "missing_caption", "empty_caption", "too_small", "duplicate", "long_caption", "odd_mode",
         "trigger_missing", "mask_unreadable", "mask_size", "mask_missing", "reg_trigger")
FIXES = ("", "exclude", "write_default_caption", "trim_caption", "resave_utf8", "add_trigger")
# How many captions without the trigger a finding names before it says "and N more".
NAMED_CAPTIONS = 3

# dHash bits two pictures may differ in and still be "the same picture" (re-encoded, resized, retouched).
NEAR_DUPLICATE_BITS = 2
# dHash sees only brightness gradients, so two flat pictures of different colours share a hash; the
# mean difference of 8×8 colour thumbnails (0–255) must be small too.
NEAR_DUPLICATE_COLOUR = 16.0


@dataclass(frozen=True)
class Finding:
    kind: str  # one of KINDS
    path: Path  # the image the finding is about (also for caption findings)
    message: str  # plain words for an artist
    fix: str = ""  # one of FIXES; "" when only the artist can fix it
    # A finding about the dataset as a whole (the trigger word) names the images its fix changes; `path`
    # is then the dataset folder.
    paths: tuple[Path, ...] = ()
    detail: str = ""  # what the fix writes: the trigger word to add, the caption to re-save as UTF-8


@dataclass
class _Fingerprint:
    rel: str
    sha256: str
    dhash: int
    thumb: np.ndarray


def check_dataset(
    cfg: DatasetConfig, resolution: int, *, trigger: str = "", progress: Callable[[int, int], None] | None = None
) -> list[Finding]:
    """Every problem in the dataset, in scan order, then whether `trigger` (the output's trigger word) is in
    every caption. progress(done, total) is called after each image."""
    root = dataset_root(cfg)
    exclude = {normalize_rel(e) for e in cfg.exclude if normalize_rel(e)}
    files = [(p, rel) for p, rel in iter_image_files(root, regularization_folders(cfg)) if not is_excluded(rel, exclude)]
    if not files:
        raise empty_dataset_error(root)
    findings: list[Finding] = []
    seen: list[_Fingerprint] = []
    unmasked: list[tuple[Path, str]] = []
    for done, (path, rel) in enumerate(files, start=1):
        findings += _check_image(path, rel, cfg, resolution, seen, unmasked)
        if progress is not None:
            progress(done, len(files))
    return findings + _unmasked_finding(root, files, unmasked) + _check_trigger(root, files, cfg, trigger)


def check_trigger(cfg: DatasetConfig, trigger: str) -> list[Finding]:
    """Only the trigger word's finding (captions are read, images are not): for a changed trigger word."""
    root = dataset_root(cfg)
    exclude = {normalize_rel(e) for e in cfg.exclude if normalize_rel(e)}
    files = [(p, rel) for p, rel in iter_image_files(root, regularization_folders(cfg)) if not is_excluded(rel, exclude)]
    return _check_trigger(root, files, cfg, trigger)


def check_regularization(cfg: DatasetConfig, resolution: int, *, trigger: str = "") -> list[Finding]:
    """The regularisation folder's problems (none when it is not set): each picture as `check_dataset` checks
    an image, named by the folder and file ("reg/p01.png"), and one finding when captions hold the trigger.
    Its findings carry no fix: "exclude" and the default caption are the dataset's own."""
    found = scan_regularization(cfg)  # its own messages for a missing or empty folder
    if found is None:
        return []
    own = regularization_dataset(cfg)
    findings: list[Finding] = []
    seen: list[_Fingerprint] = []
    files = [(p, f"{found.root.name}/{rel}") for p, rel in iter_image_files(found.root)]
    for path, rel in files:
        for f in _check_image(path, rel, own, resolution, seen, []):
            findings.append(dataclasses.replace(f, fix=""))
    trigger = trigger.strip()
    with_trigger = [item for item in found.items if trigger and has_trigger(item.caption, trigger)]
    if with_trigger:
        named = ", ".join(f"{found.root.name}/{it.rel}" for it in with_trigger[:NAMED_CAPTIONS])
        more = f" and {len(with_trigger) - NAMED_CAPTIONS} more" if len(with_trigger) > NAMED_CAPTIONS else ""
        findings.append(Finding(
            "reg_trigger", found.root,
            f'The trigger word "{trigger}" is in {len(with_trigger)} regularisation caption{"s" if len(with_trigger) != 1 else ""} '
            f"({named}{more}); they should show what the model draws without your style, so take it out of them.", "",
            paths=tuple(it.path for it in with_trigger), detail=trigger))
    return findings


def _check_image(path: Path, rel: str, cfg: DatasetConfig, resolution: int, seen: list[_Fingerprint],
                 unmasked: list[tuple[Path, str]]) -> list[Finding]:
    try:
        img = load_rgb(path)
        notes = conversion_notes(path)
    except ImageError as e:
        return [Finding("unreadable", path, f"{rel} {e.reason}; it cannot train.", "exclude")]
    out: list[Finding] = []
    with img:
        w, h = img.size
        if min(w, h) < resolution / 2:
            out.append(Finding(
                "too_small", path,
                f"{rel} is only {w}×{h} pixels; at {resolution} px it is blown up and trains blur. "
                "Use a larger version or leave it out.",
                "exclude",
            ))
        fingerprint = _fingerprint(path, rel, img)
    original = _duplicate_of(fingerprint, seen)
    if original is not None:
        how = "the same file as" if original[1] else "nearly the same picture as"
        out.append(Finding(
            "duplicate", path, f"{rel} is {how} {original[0].rel}; a copy counts double in training. Leave one out.", "exclude",
        ))
    seen.append(fingerprint)
    mask = find_mask(path) if cfg.masked_loss else None
    for note in notes:
        if mask == path and note == _TRANSPARENT_NOTE:
            note = "has transparent areas, which masked loss leaves out of training"
        out.append(Finding("odd_mode", path, f"{rel} {note} (done automatically, nothing to fix).", ""))
    if cfg.masked_loss:
        if mask is None:
            unmasked.append((path, rel))
        elif mask != path:
            out += _check_mask_file(path, rel, mask, (w, h))
    out += _check_caption(path, rel, cfg)
    return out


_TRANSPARENT_NOTE = "has transparent areas, which train as white"


def _check_mask_file(path: Path, rel: str, mask: Path, size: tuple[int, int]) -> list[Finding]:
    mask_rel = f"{Path(rel).parent.as_posix()}/{mask.parent.name}/{mask.name}".removeprefix("./")
    try:
        with load_mask(mask, alpha=False) as m:
            mw, mh = m.size
    except ImageError as e:
        return [Finding("mask_unreadable", path, f"The mask {mask_rel} of {rel} {e.reason}, so a run with masked loss stops "
                        "at it; re-save it, or delete it to train the whole picture.", "exclude")]
    if (mw, mh) != size:
        return [Finding("mask_size", path, f"The mask {mask_rel} is {mw}×{mh} pixels but {rel} is {size[0]}×{size[1]}; it is "
                        "stretched to fit, so it may not line up. Make the mask the same size as its image.", "")]
    return []


def _unmasked_finding(root: Path, files: list[tuple[Path, str]], unmasked: list[tuple[Path, str]]) -> list[Finding]:
    if not unmasked:
        return []
    named = ", ".join(rel for _, rel in unmasked[:NAMED_CAPTIONS])
    more = f" and {len(unmasked) - NAMED_CAPTIONS} more" if len(unmasked) > NAMED_CAPTIONS else ""
    what = "None of the images has a mask" if len(unmasked) == len(files) else \
        f"{len(unmasked)} of the {len(files)} images ({named}{more}) have no mask"
    return [Finding("mask_missing", root, f"{what} (transparency, or a same-name file in a masks folder beside it), so "
                    "{dataset.masked_loss} trains them everywhere.", "", paths=tuple(p for p, _ in unmasked))]


def _check_caption(path: Path, rel: str, cfg: DatasetConfig) -> list[Finding]:
    caption_path = caption_path_for(path, cfg)
    try:
        caption = read_caption(caption_path)
    except CaptionError as e:
        legacy = read_legacy_caption(caption_path) if isinstance(e, CaptionNotUtf8) else None
        if legacy is None:
            return [Finding("unreadable", path, e.message, "")]
        return [Finding(
            "not_utf8", path,
            f'The caption file of {rel} is not UTF-8 text, so the image is left out of training. Read as an old Windows '
            f'editor wrote it (Windows-1252), it says: "{legacy}". Re-save it as UTF-8 if that is right.',
            "resave_utf8", detail=legacy,
        )]
    default = default_caption_for(rel, cfg)
    fix = "write_default_caption" if default else ""
    if caption is None:
        if default:
            return [Finding("missing_caption", path, f'{rel} has no caption file; it trains with the default caption "{default}".', fix)]
        return [Finding("missing_caption", path, f"{rel} has no caption file and no default caption is set; "
                        "it trains with no words. Type a caption or set a default caption.", fix)]
    if not caption:
        if default:
            return [Finding("empty_caption", path, f'The caption file of {rel} is empty; write the default caption "{default}" into it, or type one.', fix)]
        return [Finding("empty_caption", path, f"The caption file of {rel} is empty; it trains with no words. Type a caption or set a default caption.", fix)]
    n = count_tokens(caption)
    if n > MAX_CAPTION_TOKENS:
        return [Finding(
            "long_caption", path,
            f"The caption of {rel} is {n} tokens long; the text encoder reads only the first {MAX_CAPTION_TOKENS}, "
            "so the end is ignored. Shorten it, or trim it to the tags that fit.",
            "trim_caption",
        )]
    return []


def _check_trigger(root: Path, files: list[tuple[Path, str]], cfg: DatasetConfig, trigger: str) -> list[Finding]:
    """One finding when the trigger word is missing from some or all of the caption files (images without
    one have their own finding); its fix adds the trigger as the first tag of those captions."""
    trigger = trigger.strip()
    if not trigger:
        return []
    captioned, lacking = 0, []
    for path, rel in files:
        try:
            caption = read_caption(caption_path_for(path, cfg))
        except CaptionError:
            continue  # reported above
        if caption is None:
            continue
        captioned += 1
        if not has_trigger(caption, trigger):
            lacking.append((path, rel))
    if not lacking:
        return []
    if len(lacking) == captioned:
        message = (f'The trigger word "{trigger}" is in none of the {captioned} captions, so a prompt with it will not '
                   "call up the style. Add it to every caption.")
    else:
        named = ", ".join(rel for _, rel in lacking[:NAMED_CAPTIONS])
        more = f" and {len(lacking) - NAMED_CAPTIONS} more" if len(lacking) > NAMED_CAPTIONS else ""
        message = (f'The trigger word "{trigger}" is missing from {len(lacking)} of the {captioned} captions ({named}{more}); '
                   "those images teach the style without it. Add it to them.")
    return [Finding("trigger_missing", root, message, "add_trigger", paths=tuple(p for p, _ in lacking), detail=trigger)]


def dhash(img: Image.Image) -> int:
    """64-bit difference hash: is each pixel of a 9×8 grey thumbnail brighter than its right neighbour."""
    grey = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.LANCZOS, reducing_gap=2.0), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _fingerprint(path: Path, rel: str, img: Image.Image) -> _Fingerprint:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    thumb = np.asarray(img.resize((8, 8), Image.Resampling.BOX, reducing_gap=2.0), dtype=np.float32)
    return _Fingerprint(rel, digest.hexdigest(), dhash(img), thumb)


def _duplicate_of(fp: _Fingerprint, seen: list[_Fingerprint]) -> tuple[_Fingerprint, bool] | None:
    """The first earlier image fp copies: (it, True) for identical bytes, (it, False) for a near copy."""
    for other in seen:
        if other.sha256 == fp.sha256:
            return other, True
    for other in seen:
        # A linear scan over earlier images: quadratic, but a few thousand images still take seconds.
        if (other.dhash ^ fp.dhash).bit_count() <= NEAR_DUPLICATE_BITS and \
                float(np.abs(other.thumb - fp.thumb).mean()) <= NEAR_DUPLICATE_COLOUR:
            return other, False
    return None


def apply_fix(finding: Finding, cfg: DatasetConfig) -> DatasetConfig:
    """Carry out finding.fix and return the (possibly changed) dataset settings; images are never touched."""
    root = dataset_root(cfg)
    if finding.fix == "add_trigger":
        for image in finding.paths:
            caption_path = caption_path_for(Path(image), cfg)
            caption = read_caption(caption_path)
            if caption is not None and not has_trigger(caption, finding.detail):  # typed since the check: kept
                write_caption(caption_path, add_trigger(caption, finding.detail))
        return cfg
    rel = Path(finding.path).resolve().relative_to(root).as_posix()
    if finding.fix == "exclude":
        if rel in {normalize_rel(e) for e in cfg.exclude}:
            return cfg
        return dataclasses.replace(cfg, exclude=[*cfg.exclude, rel])
    caption_path = caption_path_for(Path(finding.path), cfg)
    if finding.fix == "write_default_caption":
        text = default_caption_for(rel, cfg)
        if not text:
            raise UserError(
                f"There is no default caption to write for {rel}; set {{dataset.default_caption}} first.",
                code="no_default_caption",
            )
        if not read_caption(caption_path):  # never overwrite a caption typed since the check
            write_caption(caption_path, text)
        return cfg
    if finding.fix == "trim_caption":
        caption = read_caption(caption_path)
        if caption:
            trimmed = trim_caption(caption, MAX_CAPTION_TOKENS)
            if trimmed != caption:
                write_caption(caption_path, trimmed)
        return cfg
    if finding.fix == "resave_utf8":
        # Read again now: what is written must be the text the artist saw and confirmed.
        legacy = read_legacy_caption(caption_path)
        if legacy is None:
            return cfg  # re-saved as UTF-8 (or removed) since the check: nothing left to do
        if legacy != finding.detail:
            raise UserError(f"The caption file of {rel} has changed since the check; check the dataset again.",
                            code="caption_changed")
        write_caption(caption_path, legacy)  # atomically, as UTF-8
        return cfg
    raise ValueError(f"finding {finding.kind!r} has no automatic fix ({finding.fix!r})")
