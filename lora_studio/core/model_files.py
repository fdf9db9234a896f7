"""What a base model is, read from its files without torch: the architecture (SD1 / SD2 / SDXL) and the
size of its UNet, from config files and safetensors headers (8 bytes of length, then JSON: name → dtype,
shape, offsets). The fit estimate and the app use it; nothing here loads a weight."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from lora_studio.core import safetensors_file
from lora_studio.core.errors import Problem
from lora_studio.core.fit import ARCHS
from lora_studio.core.model_kinds import LABELS

LDM_UNET_PREFIX = "model.diffusion_model."
# A UNet within this share of a standard architecture's parameter count is that architecture (fine-tunes
# and merges have exactly its count; pruned or fp16 files only change the bytes, not the count).
STANDARD_SIZE_TOLERANCE = 0.05


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensors of a .safetensors file: {name: {"dtype", "shape", "data_offsets"}} ({} if unreadable).

    Kept per (file, size, modification time): the Settings tab asks again on every edit, and an SDXL
    checkpoint's header is some 150 kB of JSON. The dict is shared: read it, do not change it."""
    return _header_parts(path)[0]


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The file's `__metadata__` strings (modelspec.*, ss_*), {} if none or unreadable. Shared, as above."""
    return _header_parts(path)[1]


def _header_parts(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        st = Path(path).stat()
    except OSError:
        return {}, {}
    return _read_header(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_header(path: str, _size: int, _mtime_ns: int) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        header = safetensors_file.read_header(path)
    except (OSError, ValueError):  # DamagedFile is a ValueError: damaged_model() says why
        return {}, {}
    metadata = header.pop("__metadata__", None)
    return header, metadata if isinstance(metadata, dict) else {}


@functools.lru_cache(maxsize=64)
def _damage(path: str, _size: int, _mtime_ns: int) -> str | None:
    try:
        safetensors_file.read_header(path)
    except safetensors_file.DamagedFile as e:
        return e.reason
    except OSError:
        return None  # a file that cannot be opened is not damaged; loading it says what is wrong
    return None


def _file_damage(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return _damage(str(path), st.st_size, st.st_mtime_ns)


def _weight_files(folder: Path) -> list[Path]:
    """The .safetensors files of one diffusers component folder (unet/, vae/, text_encoder/ …)."""
    for index in folder.glob("*.safetensors.index.json"):
        try:
            return [folder / s for s in sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))]
        except (OSError, ValueError, AttributeError):
            return []
    return sorted(folder.glob("*.safetensors"))


def damaged_model(base: str | Path) -> str | None:
    """A sentence when the model at `base` (a .safetensors file, or a diffusers folder's weight files) is
    damaged: the header names tensors the file does not hold, as a cut-short download does. It continues
    the field's name ("Base model is damaged …"); None when nothing is wrong that the headers can show.
    Headers only: quick enough for each change of the model picker."""
    path = Path(base).expanduser()
    if path.is_file() and path.suffix.lower() == ".safetensors":
        reason = _file_damage(path)
        return f"is damaged and cannot be read ({path.name}: {reason}); download the model again." if reason else None
    if path.is_dir() and (path / "model_index.json").is_file():
        for folder in sorted(p for p in path.iterdir() if p.is_dir()):
            for file in _weight_files(folder):
                reason = _file_damage(file)
                if reason:
                    return (f"is damaged and cannot be read ({folder.name}/{file.name}: {reason}); "
                            "download the model again.")
    return None


# Key fragments only LoRA-type files hold (kohya, peft/diffusers, LyCORIS), never a base checkpoint.
_LORA_KEY_PARTS = ("lora_down", "lora_up", "lora_A", "lora_B", "hada_w1", "lokr_w1")


def is_lora_file(path: str | Path) -> bool:
    """A .safetensors whose tensors are all adapter weights: a LoRA, picked where a base model belongs."""
    header = safetensors_header(Path(path)) if str(path).lower().endswith(".safetensors") else {}
    return bool(header) and all(any(part in name for part in _LORA_KEY_PARTS) or name.endswith(".alpha")
                                for name in header)


def model_problems(cfg: Any) -> list[Problem]:
    """What the headers show is wrong with the settings' model files (base model, VAE) — gone, a LoRA in
    the base model's place, or damaged — as problems of their keys: the app shows them under the model
    picker and before Start, the moment the model is chosen, instead of a failed run 10 s after Start."""
    problems = []
    for key, value in (("model.base", cfg.model.base), ("model.vae", cfg.model.vae)):
        if not value.strip():
            continue
        path = Path(value).expanduser()
        if not path.is_absolute():
            continue  # relative to a project file this function does not know; loading resolves it
        if not path.exists():
            problems.append(Problem(key, f"({path.name}) is not there any more; it was moved or deleted: pick it again."))
        elif key == "model.base" and is_lora_file(path):
            problems.append(Problem(key, f"({path.name}) is a LoRA, not a base model; pick the Stable Diffusion "
                                         "checkpoint the LoRA is meant for."))
        elif damage := damaged_model(value):
            problems.append(Problem(key, damage))
    return problems


def _base_path(cfg: Any) -> Path | None:
    return Path(cfg.model.base).expanduser() if cfg.model.base else None


def guess_kind(cfg: Any) -> str:
    """The architecture of the config's base model: model.kind, else read from the files, else a guess
    from the resolution (1024 px: SDXL)."""
    kind = cfg.model.kind
    if kind in ARCHS:
        return kind
    path = _base_path(cfg)
    try:
        if path is not None and path.is_dir() and (path / "model_index.json").exists():
            index = json.loads((path / "model_index.json").read_text())
            if (index.get("text_encoder_2") or [None])[0]:
                return "sdxl"
            unet_cfg = json.loads((path / "unet" / "config.json").read_text())
            if unet_cfg.get("use_linear_projection") or unet_cfg.get("cross_attention_dim") == 1024:
                return "sd2"
            return "sd1"
        if path is not None and path.is_file() and path.suffix.lower() == ".safetensors":
            keys = list(safetensors_header(path))
            if any(k.startswith("conditioner.embedders.1") for k in keys):
                return "sdxl"
            if any(k.startswith("cond_stage_model.model.") for k in keys):
                return "sd2"
            if keys:
                return "sd1"
    except (OSError, ValueError):
        pass
    return "sdxl" if cfg.train.resolution >= 1024 else "sd1"


def _unet_files(folder: Path) -> list[Path]:
    # diffusers: unet/diffusion_pytorch_model[.variant].safetensors, or shards listed in an index. One
    # variant is enough (fp16 and full files hold the same tensors); prefer the plain one.
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        return [folder / s for s in sorted(shards)]
    plain = folder / "diffusion_pytorch_model.safetensors"
    if plain.is_file():
        return [plain]
    return sorted(folder.glob("diffusion_pytorch_model.*.safetensors"))[:1]


def unet_parameters(cfg: Any) -> int | None:
    """The base model's UNet parameter count, from safetensors headers; None when it cannot be read (no
    model set, a .ckpt, a folder without safetensors)."""
    path = _base_path(cfg)
    try:
        if path is not None and path.is_dir():
            headers = [safetensors_header(f) for f in _unet_files(path / "unet")]
            shapes = [t["shape"] for h in headers for t in h.values()]
        elif path is not None and path.is_file() and path.suffix.lower() == ".safetensors":
            shapes = [t["shape"] for k, t in safetensors_header(path).items() if k.startswith(LDM_UNET_PREFIX)]
        else:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sum(math.prod(s) for s in shapes) or None


def nonstandard_size(cfg: Any) -> str | None:
    """A sentence when the base model is not the size of a standard SD1 / SD2 / SDXL model (a test model, a
    distilled or pruned one), whose memory the estimate (calibrated on the standard sizes) does not
    describe; None when it is standard or its size cannot be read. Said in sizes an artist can picture,
    not in parameter counts."""
    count = unet_parameters(cfg)
    kind = guess_kind(cfg)
    standard = ARCHS[kind].unet
    if count is None or abs(count - standard) <= STANDARD_SIZE_TOLERANCE * standard:
        return None
    return (f"this base model is {_share(count / standard)} a standard {LABELS[kind]} model, so the estimate (made for "
            f"the standard sizes) does not apply; it needs {'less' if count < standard else 'more'} memory")


def _share(ratio: float) -> str:
    if ratio < 0.01:
        return "under 1 % of the size of"
    if ratio < 1:
        return f"about {round(ratio * 100)} % of the size of"
    return f"about {ratio:.1f} times the size of"
