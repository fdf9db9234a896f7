"""A project folder: its settings file, its runs, its cache, and the list of recently opened projects.

```
MyStyle/
  lora_studio.toml    the settings (paths inside the project stored relative, so the folder can move)
  images/             the dataset, when the artist chose to copy images in
  runs/<run-id>/      one folder per run (core/runs.py)
  cache/              thumbnails, latents, text-encoder outputs
```
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lora_studio.core import config as config_mod
from lora_studio.core.atomic import atomic_write, atomic_write_text
from lora_studio.core.config import Config
from lora_studio.core.errors import UserError
from lora_studio.core.runs import RunDir, list_runs

PROJECT_FILE = "lora_studio.toml"
APP_NAME = "LoRA Studio"
MAX_RECENT = 10
# Keys holding paths: stored relative to the project when they point inside it.
PATH_KEYS = config_mod.PATH_KEYS


class Project:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Project) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        return self.root / PROJECT_FILE

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def thumbs_dir(self) -> Path:
        return self.cache_dir / "thumbs"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def load_config(self) -> Config:
        """The settings with every path made absolute. Not validated: a half-set-up project still opens."""
        return config_mod.load(self.config_path, check=False)

    def save_config(self, cfg: Config) -> None:
        atomic_write_text(self.config_path, config_mod.dumps(self.relative(cfg)))

    def relative(self, cfg: Config) -> Config:
        """A copy whose paths inside the project are relative to it (the project folder can move)."""
        changes = {}
        for key in PATH_KEYS:
            value = cfg.get(key)
            if not value:
                continue
            p = Path(value).expanduser()
            if not p.is_absolute():
                continue
            try:
                rel = p.resolve().relative_to(self.root)
            except ValueError:
                continue  # outside the project: the artist's own folder stays absolute
            changes[key] = rel.as_posix() or "."
        return cfg.with_changes(changes)

    def new_run(self, cfg: Config | None = None) -> RunDir:
        """A fresh run folder under runs/ with the run's settings (absolute paths, output.dir = the run).

        Raises ConfigError before creating anything when the settings cannot train.
        """
        cfg = self.load_config() if cfg is None else cfg
        return RunDir.create(self.runs_dir, config_mod.resolve_paths(cfg, self.root))

    def list_runs(self) -> list[Path]:
        """Run folders (core/runs.py says what a run is), newest first."""
        return [r.path for r in list_runs(self.runs_dir)]


def is_project(path: str | Path) -> bool:
    return (Path(path) / PROJECT_FILE).is_file()


def create_project(root: str | Path, dataset_path: str | Path | None = None, base_model: str = "", preset: str = "style-sd15") -> Project:
    """A new project folder with settings from a preset. Without a dataset, images go in `root/images`."""
    from lora_studio.core.presets import apply_preset

    project = Project(root)
    if project.exists():
        raise UserError(f"{project.root} already holds a LoRA Studio project.", hint="Open it instead, or choose an empty folder.")
    if not folder_is_free(project.root):
        # The project's images/, runs/ and settings must not land among someone's other files unannounced.
        raise UserError(f"The folder {project.root} already holds other files; choose an empty folder or a new name for the project.",
                        hint="A project is a folder of its own: LoRA Studio writes images/, runs/ and lora_studio.toml into it.",
                        code="folder_not_empty")
    project.root.mkdir(parents=True, exist_ok=True)
    if dataset_path is None:
        project.images_dir.mkdir(exist_ok=True)
        dataset = project.images_dir
    else:
        dataset = Path(dataset_path).expanduser().resolve()
    cfg = Config()
    if preset:
        cfg = apply_preset(cfg, preset)
    name = _safe_name(project.name)
    cfg = cfg.replace(model={"base": str(base_model)}, dataset={"path": str(dataset)}, output={"name": name})
    project.save_config(cfg)
    return project


def folder_is_free(path: str | Path) -> bool:
    """A folder a new project may go in: one that does not exist yet, or an empty one (hidden files such as
    .DS_Store do not count)."""
    path = Path(path).expanduser()
    if not path.exists():
        return True
    return path.is_dir() and not any(not entry.name.startswith(".") for entry in path.iterdir())


def _safe_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_.")
    return cleaned.lower() or "my_style"


def open_project(path: str | Path) -> Project:
    """The project at a folder (or at its lora_studio.toml), checked to exist and to be readable."""
    p = Path(path).expanduser()
    if p.name == PROJECT_FILE:
        p = p.parent
    project = Project(p)
    if not project.exists():
        raise UserError(f"{project.root} is not a LoRA Studio project (it has no {PROJECT_FILE}).", hint="Choose the project folder, or create a new project.")
    project.load_config()  # raises ConfigError with every problem when the file is broken
    return project


# --- bringing images in --------------------------------------------------------------------------


@dataclass
class ImportResult:
    dest: Path
    copied: list[Path] = field(default_factory=list)  # the new files in dest
    captions: int = 0  # caption sidecars copied along
    already: int = 0  # identical files already there, not copied again


def collect_images(paths: Iterable[str | Path]) -> list[tuple[Path, PurePosixPath]]:
    """(image, where it goes relative to the destination) for dropped files and folders.

    A dropped folder's images keep their place inside it (so kohya `10_name` subfolders survive);
    its own name is dropped, as the images are the point. Other files are ignored.
    """
    from lora_studio.core.dataset import iter_image_files
    from lora_studio.core.images import is_image_file

    out: list[tuple[Path, PurePosixPath]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += [(img, PurePosixPath(rel)) for img, rel in iter_image_files(p)]
        elif p.is_file() and is_image_file(p):
            out.append((p, PurePosixPath(p.name)))
    return out


def copy_images(images: list[tuple[Path, PurePosixPath]], dest: Path, caption_extension: str = ".txt") -> ImportResult:
    """Copy images (and their caption sidecars) into dest, atomically, never overwriting a different file."""
    result = ImportResult(dest=Path(dest))
    for src, rel in images:
        target = _free_name(Path(dest) / rel, src, caption_extension)
        if target is None:
            result.already += 1
            continue
        atomic_write(target, lambda tmp, s=src: shutil.copyfile(s, tmp))
        result.copied.append(target)
        caption = src.with_suffix(caption_extension)
        if caption.is_file():
            atomic_write(target.with_suffix(caption_extension), lambda tmp, c=caption: shutil.copyfile(c, tmp))
            result.captions += 1
    return result


def _free_name(target: Path, src: Path, caption_extension: str) -> Path | None:
    """target, or target-2, -3...; None when the very same file is already there."""
    candidate, n = target, 2
    # A name is free only when its caption name is free too: an orphan .txt must not caption a new image.
    while candidate.exists() or candidate.with_suffix(caption_extension).exists():
        if candidate.is_file() and filecmp.cmp(candidate, src, shallow=False):
            return None
        candidate, n = target.with_name(f"{target.stem}-{n}{target.suffix}"), n + 1
    return candidate


# --- app-wide places -----------------------------------------------------------------------------


def user_config_dir() -> Path:
    # The override keeps tests (and portable installs) away from the artist's real settings.
    override = os.environ.get("LORA_STUDIO_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def default_demo_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_documents_dir()) / "LoRA Studio Demo"


def _recent_file() -> Path:
    return user_config_dir() / "recent_projects.json"


def recent_projects() -> list[Path]:
    """Recently opened projects that still exist, newest first."""
    try:
        data = json.loads(_recent_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [Path(p) for p in data if isinstance(p, str) and is_project(p)]


def add_recent_project(root: str | Path) -> list[Path]:
    root = Path(root).expanduser().resolve()
    items = [root] + [p for p in recent_projects() if p != root]
    items = items[:MAX_RECENT]
    atomic_write_text(_recent_file(), json.dumps([str(p) for p in items], indent=2))
    return items


def forget_recent_project(root: str | Path) -> list[Path]:
    root = Path(root).expanduser().resolve()
    items = [p for p in recent_projects() if p != root]
    atomic_write_text(_recent_file(), json.dumps([str(p) for p in items], indent=2))
    return items
