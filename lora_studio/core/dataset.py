"""The dataset scan: which images train, with which caption, how many times per epoch.

Layout rules (kohya-compatible, so an existing sd-scripts folder works unchanged):
- every image under `dataset.path`, recursively, in a deterministic order (folder by folder, names
  compared case-insensitively);
- a folder named `N_name` (e.g. `10_mystyle`) repeats its images N times per epoch; nested folders
  inherit the nearest such prefix; images outside any get `dataset.repeats`;
- the caption is the same-stem sidecar (`image.png` → `image.txt`); an image without one gets
  `dataset.default_caption`, or, when that is empty, the `name` of its `N_name` folder, as kohya does;
- hidden files and folders are skipped, and so are the `runs/` and `cache/` folders of a LoRA Studio
  project (a folder holding `lora_studio.toml`), so our own samples never become training images;
- a folder named `masks` holds training masks (`find_mask`), never training images, so it is skipped too;
- the regularisation folder (`dataset.regularization.path`, `scan_regularization`) is scanned on its own
  with the same rules and skipped by the dataset's scan when it lies inside the image folder.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lora_studio.core.captions import CaptionError, read_caption
from lora_studio.core.config import DatasetConfig
from lora_studio.core.errors import UserError
from lora_studio.core.images import IMAGE_EXTENSIONS, ImageError, has_alpha, image_size, is_image_file, load_rgb

PROJECT_FILE = "lora_studio.toml"
_PROJECT_OUTPUT_DIRS = {"runs", "cache"}
MASKS_DIR = "masks"
MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")  # looked for in this order
_SKIPPED_DIR_NAMES = {"__pycache__", "__MACOSX", MASKS_DIR}
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.*)$")


@dataclass(frozen=True)
class ImageItem:
    path: Path  # absolute
    rel: str  # posix path relative to the dataset root: the key `dataset.exclude` uses
    caption: str  # the caption this image trains with: the sidecar's text, or the default when it has none
    has_caption: bool  # a sidecar file exists (it may still be empty)
    caption_path: Path  # where the sidecar is or would be written
    repeats: int
    width: int  # upright size (after EXIF rotation)
    height: int
    dataset_dir: str = ""  # kohya's dataset dir: the `N_name` folder's rel path, or the root's name
    # With dataset.masked_loss on: the file the training mask is read from (find_mask) — a masks/ file, or
    # `path` itself when the image's alpha channel is the mask; None trains the whole picture.
    mask: Path | None = None
    regularization: bool = False  # from dataset.regularization.path: weighted by its loss_weight

    @property
    def mask_is_alpha(self) -> bool:
        return self.mask is not None and self.mask == self.path


@dataclass
class ScanResult:
    root: Path
    items: list[ImageItem]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason it cannot train)
    missing_captions: int = 0
    excluded: int = 0

    @property
    def samples_per_epoch(self) -> int:
        return sum(item.repeats for item in self.items)

    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """kohya's ss_dataset_dirs: {dataset dir: {"n_repeats": n, "img_count": n}}."""
        dirs: dict[str, dict[str, int]] = {}
        for item in self.items:
            entry = dirs.setdefault(item.dataset_dir, {"n_repeats": item.repeats, "img_count": 0})
            entry["img_count"] += 1
        return dirs


def repeat_folder(name: str) -> tuple[int, str] | None:
    """(N, name) for a kohya `N_name` folder name, else None. `0_x` is not one (it would never train)."""
    m = _REPEAT_FOLDER.match(name)
    if m and int(m.group(1)) > 0:
        return int(m.group(1)), m.group(2)
    return None


def dataset_root(cfg: DatasetConfig) -> Path:
    if not cfg.path.strip():
        raise UserError(
            "{dataset.path} is empty; set it to the folder that holds your images.",
            hint="Choose the image folder in the Dataset tab.", code="dataset_not_found",
        )
    root = Path(cfg.path).expanduser().resolve()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserError(
            f"The dataset folder {root} {what}; point {{dataset.path}} at the folder that holds your images.",
            hint="Choose the image folder in the Dataset tab.", code="dataset_not_found",
        )
    return root


def normalize_rel(rel: str) -> str:
    """A rel path as `exclude` stores it: posix separators, no leading ./ (a Windows-typed path matches too)."""
    return str(PurePosixPath(rel.replace("\\", "/"))).lstrip("/") if rel.strip() else ""


def is_excluded(rel: str, exclude: set[str]) -> bool:
    # An entry names a file or a whole folder.
    return rel in exclude or any(rel.startswith(e + "/") for e in exclude)


def _sort_key(entry: os.DirEntry[str]) -> tuple[str, str]:
    return entry.name.casefold(), entry.name


def iter_image_files(root: Path, skip: frozenset[Path] = frozenset()) -> Iterator[tuple[Path, str]]:
    """(absolute path, rel posix path) of every image file under root, in the scan order; folders whose
    resolved path is in `skip` are left out."""
    seen: set[Path] = set(skip)

    def walk(folder: Path, rel_parts: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
        real = folder.resolve()
        if real in seen:  # a symlinked folder pointing back up would loop forever
            return
        seen.add(real)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=_sort_key)
        except OSError:
            return  # an unreadable subfolder: its images are simply not there
        is_project = any(e.name == PROJECT_FILE for e in entries)
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir()
            except OSError:
                continue
            if is_dir:
                if e.name in _SKIPPED_DIR_NAMES or (is_project and e.name in _PROJECT_OUTPUT_DIRS):
                    continue
                subdirs.append(e)
            elif is_image_file(Path(e.name)):
                yield Path(e.path), "/".join(rel_parts + (e.name,))
        for e in subdirs:  # files first, then subfolders: a folder's own images come before its children's
            yield from walk(Path(e.path), rel_parts + (e.name,))

    yield from walk(root, ())


def _folder_settings(root: Path, rel: str, cfg: DatasetConfig) -> tuple[int, str, str]:
    """(repeats, dataset dir key, folder trigger) for the image at rel, from its nearest `N_name` folder."""
    parts = rel.split("/")[:-1]
    for depth in range(len(parts), 0, -1):
        found = repeat_folder(parts[depth - 1])
        if found:
            return found[0], "/".join(parts[:depth]), found[1].strip()
    found = repeat_folder(root.name)  # the artist may point straight at a `10_mystyle` folder
    if found:
        return found[0], root.name, found[1].strip()
    return cfg.repeats, root.name, ""


def default_caption_for(item_or_rel: ImageItem | str, cfg: DatasetConfig) -> str:
    """The caption an uncaptioned image trains with: dataset.default_caption, else its folder's trigger."""
    rel = item_or_rel.rel if isinstance(item_or_rel, ImageItem) else item_or_rel
    if cfg.default_caption.strip():
        return cfg.default_caption.strip()
    return _folder_settings(dataset_root(cfg), normalize_rel(rel), cfg)[2]


def mask_file_for(image: Path) -> Path | None:
    """The `masks/<stem>.png|jpg|jpeg|webp` file beside `image`, if there is one."""
    folder = Path(image).parent / MASKS_DIR
    if not folder.is_dir():
        return None
    for ext in MASK_EXTENSIONS:
        candidate = folder / (Path(image).stem + ext)
        if candidate.is_file():
            return candidate
    return None


def find_mask(image: Path) -> Path | None:
    """Where `image`'s training mask comes from (dataset.masked_loss): white trains, black is ignored.

    A same-stem file in a `masks/` folder beside the image wins over the image's own alpha channel: the
    file is made on purpose, for training, while transparency is often only how a picture was exported
    (transparent padding, a soft shadow). A mask file lets the artist override it without re-saving the
    picture. Returns the mask file, `image` itself when its alpha channel is the mask, or None (the whole
    picture trains). An image that cannot be opened has no alpha mask (the image itself is reported)."""
    found = mask_file_for(image)
    if found is not None:
        return found
    try:
        return Path(image) if has_alpha(image) else None
    except ImageError:
        return None


def caption_path_for(image: Path, cfg: DatasetConfig) -> Path:
    ext = cfg.caption_extension if cfg.caption_extension.startswith(".") else "." + cfg.caption_extension
    return image.with_suffix(ext)


def scan(cfg: DatasetConfig, *, verify: bool = False) -> ScanResult:
    """Every trainable image under cfg.path. verify=True decodes each one (slow, catches truncated files)."""
    root = dataset_root(cfg)
    exclude = {normalize_rel(e) for e in cfg.exclude if normalize_rel(e)}
    result = ScanResult(root=root, items=[])
    for path, rel in iter_image_files(root, regularization_folders(cfg)):
        if is_excluded(rel, exclude):
            result.excluded += 1
            continue
        try:
            if verify:
                with load_rgb(path) as img:
                    width, height = img.size
            else:
                width, height = image_size(path)
        except ImageError as e:
            result.skipped.append((path, e.reason))
            continue
        caption_path = caption_path_for(path, cfg)
        repeats, dataset_dir, trigger = _folder_settings(root, rel, cfg)
        try:
            text = read_caption(caption_path)
        except CaptionError as e:
            result.skipped.append((path, f"its caption file cannot be read: {e.message}"))
            continue
        has_caption = text is not None
        if not has_caption:
            result.missing_captions += 1
            text = cfg.default_caption.strip() or trigger
        result.items.append(ImageItem(
            path=path, rel=rel, caption=text, has_caption=has_caption, caption_path=caption_path,
            repeats=repeats, width=width, height=height, dataset_dir=dataset_dir,
            mask=find_mask(path) if cfg.masked_loss else None,
        ))
    if not result.items:
        if result.excluded and not result.skipped:
            raise UserError(
                f"Every image in the dataset folder {root} is excluded; remove some entries from {{dataset.exclude}}.",
                code="empty_dataset",
            )
        raise empty_dataset_error(root)
    return result


def regularization_folders(cfg: DatasetConfig) -> frozenset[Path]:
    """The regularisation folder, when it is set: the dataset's scan never takes its pictures as training images."""
    reg = cfg.regularization.path.strip()
    return frozenset({Path(reg).expanduser().resolve()}) if reg else frozenset()


def regularization_dataset(cfg: DatasetConfig) -> DatasetConfig | None:
    """dataset.regularization's folder as a dataset of its own (None when it is not set), for `scan` and the
    health check: the dataset's rules (N_name folders, sidecar captions, masks) with its own repeats and no
    default caption -- the dataset's default caption usually carries the trigger, which a regularisation
    picture must not learn (an uncaptioned one takes its N_name folder's name, as kohya's class token)."""
    reg = cfg.regularization
    if not reg.path.strip():
        return None
    root = Path(reg.path).expanduser().resolve()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserError(f"The regularisation folder {root} {what}; point {{dataset.regularization.path}} at a folder of "
                        "pictures, or empty it to train without.", code="regularization_not_found")
    return dataclasses.replace(cfg, path=str(root), repeats=reg.repeats, exclude=[], default_caption="", validation_path="",
                               validation_split=0.0, regularization=dataclasses.replace(reg, path=""))


def scan_regularization(cfg: DatasetConfig, *, verify: bool = False) -> ScanResult | None:
    """The regularisation pictures of dataset.regularization (None when its folder is not set), read as
    `regularization_dataset` says, each marked as one."""
    own = regularization_dataset(cfg)
    if own is None:
        return None
    root = Path(own.path)
    try:
        result = scan(own, verify=verify)
    except UserError as e:
        if e.code != "empty_dataset":
            raise
        raise UserError(f"The regularisation folder {root} holds no pictures that can be opened; add .png/.jpg/.webp files "
                        "or empty {dataset.regularization.path} to train without.", code="empty_regularization") from None
    result.items = [dataclasses.replace(it, regularization=True) for it in result.items]
    return result


def regularization_epoch(train_items: list[ImageItem], reg_items: list[ImageItem]) -> list[ImageItem]:
    """The regularisation pictures of one epoch, their repeats set by kohya's rule (sd-scripts train_util,
    DreamBoothDataset): as many regularisation samples as training samples, each picture taking its own
    repeats in turn and then one more each round while there are too few; pictures beyond the count are
    left out. The epoch then mixes both, shuffled into the same batches."""
    target = sum(it.repeats for it in train_items)
    counts = [0] * len(reg_items)
    n, first = 0, True
    while reg_items and n < target:
        for i, item in enumerate(reg_items):
            step = item.repeats if first else 1
            counts[i] += step
            n += step
            if n >= target:
                break
        first = False
    return [dataclasses.replace(it, repeats=c) for it, c in zip(reg_items, counts) if c]


def split_validation(items: list[ImageItem], split: float, seed: int) -> tuple[list[ImageItem], list[ImageItem]]:
    """(trained on, held out): `split` of the images (a fraction < 1, or a count >= 1) held out for the
    validation loss, chosen with the run's seed, so every run of a project holds out the same ones. At
    least one image always trains."""
    if split <= 0 or len(items) < 2:
        return list(items), []
    count = round(split * len(items)) if split < 1 else int(split)
    count = max(1, min(count, len(items) - 1))
    held = set(random.Random(seed).sample(range(len(items)), count))
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def empty_dataset_error(root: Path) -> UserError:
    return UserError(
        f"The dataset folder {root} holds no images that can be opened; "
        "add .png/.jpg/.webp files or point {dataset.path} at the right folder.",
        hint="Supported: " + ", ".join(sorted(IMAGE_EXTENSIONS)) + ".", code="empty_dataset",
    )
