"""Where the shipped resources (model configs, tokenizer files, presets) live."""

from __future__ import annotations

from pathlib import Path

import lora_studio

# The repository layout (`pip install -e .`) keeps resources/ beside the package.
RESOURCES = Path(lora_studio.__file__).resolve().parent.parent / "resources"


def resource(*parts: str) -> Path:
    return RESOURCES.joinpath(*parts)
