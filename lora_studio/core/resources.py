"""Where the shipped resources (model configs, tokenizer files, presets) live."""

from __future__ import annotations

import sys
from pathlib import Path

import lora_studio


def _find() -> Path:
    # A source checkout (`pip install -e .`, the README's way) keeps resources/ beside the package;
    # a regular install puts it under <prefix>/share/lora-studio/ (pyproject's data-files).
    beside = Path(lora_studio.__file__).resolve().parent.parent / "resources"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "lora-studio" / "resources"


RESOURCES = _find()


def resource(*parts: str) -> Path:
    return RESOURCES.joinpath(*parts)
