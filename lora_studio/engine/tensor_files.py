"""Writing tensors so that a failed write is an OSError naming the file (errno intact).

safetensors' writer reports a full disk as `SafetensorError: Error while serializing: I/O error: …` and
torch.save as a RuntimeError from its zip writer: neither says which file, nor is an OSError the engine
can turn into "the disk is full". Both serialize to bytes here instead (a LoRA, its optimizer state and a
cache entry are megabytes, not gigabytes), and Python writes them.
"""

from __future__ import annotations

import io
from pathlib import Path

import safetensors.torch
import torch

from lora_studio.core.atomic import naming


def write_bytes(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        named = naming(e, path)
        if named is e:
            raise
        raise named from e


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    write_bytes(path, safetensors.torch.save(tensors, metadata))


def save_torch(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())
