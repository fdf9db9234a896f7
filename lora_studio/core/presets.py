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

    @property
    def values(self) -> dict[str, Any]:
        """{"section.key": value} of every key the preset sets."""
        return {f"{section}.{key}": v for section, values in self.settings.items() for key, v in values.items()}

    @property
    def keys(self) -> frozenset[str]:
        """The "section.key"s the preset sets: an edit of any of them may end or restore its match."""
        return frozenset(self.values)

    def matches(self, cfg: Config) -> bool:
        return all(cfg.get(key) == value for key, value in self.values.items())


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
    return cfg.with_changes(get_preset(name).values)


def preset_keys() -> frozenset[str]:
    """Every key some shipped preset sets: the keys whose edits can change which preset is in use."""
    return frozenset().union(*(get_preset(name).keys for name in list_presets()))


def matching_preset(cfg: Config) -> str | None:
    """The preset whose every key the config still has, if any (the picker shows it as current)."""
    return next((name for name in list_presets() if get_preset(name).matches(cfg)), None)
