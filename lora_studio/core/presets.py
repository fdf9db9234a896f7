"""Presets: partial configs in `resources/presets/<name>.toml`, laid over a project's settings.

A preset names only the keys it cares about; applying it leaves everything else (the base model, the
dataset, the trigger word) as the artist set it. The `[preset]` table holds its label and description.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from lora_studio.core import config as config_mod
from lora_studio.core.config import Config
from lora_studio.core.errors import UserError
from lora_studio.core.resources import resource

DEFAULT_PRESET = "style-sd15"


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    description: str
    settings: dict[str, dict[str, Any]]  # section -> key -> value


def presets_dir() -> Path:
    return resource("presets")


def list_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


@lru_cache(maxsize=None)
def _read(path: Path, mtime_ns: int) -> Preset:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    info = data.pop("preset", {})
    # Checked against the schema here, so a typo in a preset fails loudly, not silently at apply time.
    config_mod.from_dict(data, check=False)
    return Preset(path.stem, info.get("label", path.stem), info.get("description", ""), data)


def get_preset(name: str) -> Preset:
    path = presets_dir() / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"There is no preset named {name!r}.", hint=f"Choose one of: {', '.join(list_presets())}.")
    return _read(path, path.stat().st_mtime_ns)


def apply_preset(cfg: Config, name: str) -> Config:
    preset = get_preset(name)
    return cfg.replace(**{section: dict(values) for section, values in preset.settings.items()})


def matching_preset(cfg: Config) -> str | None:
    """The preset whose every key the config still has, if any (the picker shows it as current)."""
    data = cfg.to_dict()
    for name in list_presets():
        settings = get_preset(name).settings
        if all(data[s].get(k) == v for s, values in settings.items() for k, v in values.items()):
            return name
    return None
