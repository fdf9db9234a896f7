"""Find base models and LoRA folders the artist already has, so the model picker is not an empty box.

Looked for: the model folders of AUTOMATIC1111, Forge, ComfyUI, SD.Next, StabilityMatrix and InvokeAI
installs in the home folder (and one or two levels below it), and the Hugging Face cache. Only
`.safetensors` files and diffusers folders (with a model_index.json) are offered: a pickled `.ckpt`
is untrusted code.

Environment overrides (tests, and artists with installs elsewhere):
- LORA_STUDIO_SEARCH_HOME: the folder searched instead of the home folder.
- LORA_STUDIO_MODEL_DIRS: extra checkpoint folders, separated by os.pathsep.
- HF_HUB_CACHE or HF_HOME: the Hugging Face cache, as huggingface_hub reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_DIRS = ("models/Stable-diffusion", "models/checkpoints", "models/StableDiffusion", "Models/StableDiffusion", "Data/Models/StableDiffusion")
LORA_DIRS = ("models/Lora", "models/loras", "models/LoRA", "Models/Lora", "Data/Models/Lora")
# How far below the home folder an install may sit: ~/ComfyUI, ~/AI/ComfyUI, ~/AI/tools/ComfyUI.
INSTALL_DEPTH = 3
SKIP_DIRS = {"node_modules", "site-packages", "__pycache__", ".git", ".venv", "venv", "Library", "AppData"}
MAX_FILES_PER_DIR = 2000


def _home() -> Path:
    return Path(os.environ.get("LORA_STUDIO_SEARCH_HOME") or Path.home())


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return _home() / ".cache" / "huggingface" / "hub"


def _install_roots() -> list[Path]:
    """Folders that may be an install: home and its subfolders down to INSTALL_DEPTH, hidden ones skipped."""
    roots, frontier = [], [_home()]
    for level in range(INSTALL_DEPTH + 1):
        roots += frontier
        if level == INSTALL_DEPTH:
            break
        nxt = []
        for folder in frontier:
            try:
                nxt += [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in SKIP_DIRS]
            except OSError:
                continue  # unreadable folders are not ours to report
        frontier = nxt
        if len(roots) > 20_000:  # a huge home: stop widening rather than stall the picker
            break
    return roots


def _existing(roots: list[Path], names: tuple[str, ...]) -> list[Path]:
    found = []
    for root in roots:
        for name in names:
            p = root / name
            if p.is_dir():
                found.append(p)
    return _unique(found)


def _unique(paths: list[Path]) -> list[Path]:
    seen, out = set(), []
    for p in paths:
        key = os.path.normcase(str(p.resolve()))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _models_in(folder: Path, depth: int = 2) -> list[Path]:
    """Single-file checkpoints and diffusers folders inside a checkpoint folder (subfolders allowed)."""
    out: list[Path] = []
    try:
        entries = sorted(folder.iterdir())[:MAX_FILES_PER_DIR]
    except OSError:
        return out
    for p in entries:
        if p.is_file() and p.suffix.lower() == ".safetensors":
            out.append(p)
        elif p.is_dir() and not p.name.startswith("."):
            if (p / "model_index.json").is_file():
                out.append(p)
            elif depth > 0:
                out += _models_in(p, depth - 1)
    return out


def checkpoint_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("LORA_STUDIO_MODEL_DIRS", "").split(os.pathsep) if p]
    return _unique([p for p in extra if p.is_dir()] + _existing(_install_roots(), CHECKPOINT_DIRS))


def hf_cache_models() -> list[Path]:
    """Diffusers snapshots in the Hugging Face cache (only the ones with a model_index.json)."""
    hub = _hf_hub_cache()
    if not hub.is_dir():
        return []
    return sorted(p.parent for p in hub.glob("models--*/snapshots/*/model_index.json"))


def find_base_models() -> list[Path]:
    models: list[Path] = []
    for folder in checkpoint_dirs():
        models += _models_in(folder)
    models += hf_cache_models()
    return _unique(models)


def find_lora_dirs() -> list[Path]:
    return _existing(_install_roots(), LORA_DIRS)


def describe_model(path: Path) -> str:
    """A short label for the picker: the file name, or `org/name` for a Hugging Face snapshot."""
    for parent in path.parents:
        if parent.name.startswith("models--"):
            return parent.name[len("models--"):].replace("--", "/")
    return path.name
