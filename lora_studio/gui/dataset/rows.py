"""What the grid lists: every image the scan can train on and, in their places, the image files it
could not use (a text file renamed .png, an unreadable caption), so each one can be seen, read about
and excluded or included again like any other. Training never sees the unusable ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lora_studio.core.captions import CaptionError, read_caption
from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import ScanResult, caption_path_for


@dataclass(frozen=True)
class UnusableFile:
    """A row for an image file the scan skipped, shaped like core/dataset's ImageItem."""

    path: Path
    rel: str
    caption_path: Path
    reason: str  # why it cannot train, continuing its name: "is not an image that can be opened (...)"
    caption: str = ""
    has_caption: bool = False
    repeats: int = 0
    width: int = 0
    height: int = 0
    dataset_dir: str = ""


def unusable_reason(row: Any) -> str:
    """Why a grid row cannot train ("" for an image that can)."""
    return getattr(row, "reason", "") or ""


def cannot_train(reason: str) -> str:
    """The sentence that says why a row cannot train (its tooltip, the caption editor), without its end."""
    return f"This file {reason}, so it cannot train"


def _scan_order(rel: str) -> tuple:
    # core/dataset's order: names compared case-insensitively, a folder's files before its subfolders.
    parts = PurePosixPath(rel).parts
    return tuple((1, p.casefold()) for p in parts[:-1]) + ((0, parts[-1].casefold()),)


def _caption(path: Path) -> str | None:
    """The caption of a file that cannot train, shown as it is: fixing or replacing the picture keeps it."""
    try:
        return read_caption(path)
    except CaptionError:
        return None  # the scan's reason already says the caption cannot be read


def grid_rows(result: ScanResult, cfg: DatasetConfig) -> list[Any]:
    """The scan's images and its skipped files, in the scan's order."""
    skipped = []
    for path, reason in result.skipped:
        try:
            rel = Path(path).relative_to(result.root).as_posix()
        except ValueError:
            continue
        caption_path = caption_path_for(Path(path), cfg)
        caption = _caption(caption_path)
        skipped.append(UnusableFile(Path(path), rel, caption_path, reason, caption or "", caption is not None))
    return sorted([*result.items, *skipped], key=lambda row: _scan_order(row.rel))
