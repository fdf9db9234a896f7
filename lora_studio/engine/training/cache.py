"""Latents and text-encoder outputs on disk, keyed by content hash + the settings that shape them.

A second run on the same images (another rank, more steps, a resumed run) skips the VAE and text
encoders entirely; changing an image, its caption, the bucket, the base model or the seed changes the
key, so a stale entry is never used. Entries are written atomically and a damaged one is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from lora_studio.core.atomic import atomic_write
from lora_studio.engine.tensor_files import save_safetensors


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_identity(base: str, vae: str = "") -> str:
    """Which weights produced an encoding: the paths plus their sizes and modification times."""
    parts = []
    for p in filter(None, (base, vae)):
        path = Path(p)
        files = [path] if path.is_file() else sorted(path.rglob("*.safetensors")) + sorted(path.rglob("*.bin"))
        parts += [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def make_key(*fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:40]


class DiskCache:
    def __init__(self, root: Path | None):
        self.root = Path(root) if root else None

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.safetensors"

    def get(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        if self.root is None:
            return None
        path = self._path(kind, key)
        if not path.exists():
            return None
        try:
            return load_file(path)
        except (SafetensorError, OSError, RuntimeError):
            path.unlink(missing_ok=True)  # damaged (a crash mid-write on an old version): recompute
            return None

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.root is None:
            return
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        try:
            atomic_write(self._path(kind, key), lambda tmp: save_safetensors(tensors, tmp))
        except OSError:
            pass  # a full or read-only disk only costs speed, never the run


def default_cache_dir(run_dir: Path) -> Path | None:
    """`<project>/cache` for a run under `<project>/runs/<id>`; none otherwise (or when disabled)."""
    if os.environ.get("LORA_STUDIO_NO_DISK_CACHE"):
        return None
    run_dir = Path(run_dir)
    if run_dir.parent.name == "runs":
        return run_dir.parent.parent / "cache"
    return None
