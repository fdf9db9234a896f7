"""The run/project configuration: a typed schema, read from and written to TOML.

The TOML keys are a public contract (scripts and the app write them). Validation returns every problem
at once, each naming the key and the fix, so the artist fixes a config in one pass.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from lora_studio.core.atomic import atomic_write_text
from lora_studio.core.errors import ConfigError, Problem
from lora_studio.core.model_kinds import KINDS

SCHEMA_VERSION = 1


@dataclass
class ModelConfig:
    base: str = ""  # a diffusers folder or a single .safetensors checkpoint
    kind: str = "auto"  # auto | sd1 | sd2 | sdxl
    prediction: str = "auto"  # auto | epsilon | v
    clip_skip: int = 1
    # The pretrained VAE is used as it is; SDXL's fp16 VAE NaN problem is avoided by encoding in fp32.
    vae: str = ""


@dataclass
class DatasetConfig:
    path: str = ""
    default_caption: str = ""  # for images with no .txt sidecar
    caption_extension: str = ".txt"
    repeats: int = 1  # for images not in a kohya `N_name` folder
    exclude: list[str] = field(default_factory=list)  # paths relative to `path` left out of training
    shuffle_tags: bool = False
    keep_tokens: int = 0  # keep the first N comma-separated tags in place when shuffling
    caption_dropout: float = 0.0  # probability of training an image with an empty caption
    flip: bool = False
    random_crop: bool = False
    min_bucket_side: int = 256
    max_bucket_side: int = 1024
    bucket_step: int = 64


@dataclass
class NetworkConfig:
    rank: int = 16
    alpha: float = 16.0
    targets: str = "attention"  # attention | attention+ff
    train_text_encoder: bool = False
    text_encoder_lr: float = 5e-5
    dropout: float = 0.0


@dataclass
class TrainConfig:
    max_steps: int = 1500
    # 0: train max_steps steps. > 0: train this many whole epochs; the engine works out the steps from the
    # dataset when it starts (core/budget), so "10 epochs" stays 10 epochs after images are added.
    epochs: int = 0
    batch_size: int = 1
    gradient_accumulation: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"  # constant | cosine | linear
    warmup_steps: int = 0
    optimizer: str = "adamw"  # adamw | adamw8bit
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    resolution: int = 512
    seed: int = 42
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16 (auto: bf16 where supported, fp16 on older GPUs, fp32 on CPU)
    base_weights: str = "auto"  # auto | fp32 | fp16 | bf16 | fp8 (storage of the frozen base weights)
    gradient_checkpointing: bool = False
    cache_latents: bool = True
    cache_text_encoder: bool = True  # only when the text encoder is frozen
    noise_offset: float = 0.0
    min_snr_gamma: float = 0.0  # 0 disables; 5 is the paper's value (Hang et al. 2023)
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 10  # read the loss back from the device every N steps
    compile: bool = False
    channels_last: bool = True
    num_workers: int = 0


@dataclass
class SampleConfig:
    every: int = 250  # 0 disables; a step-0 baseline is always made when prompts are set
    prompts: list[str] = field(default_factory=list)
    negative_prompt: str = ""
    seed: int = 1234
    steps: int = 25
    guidance_scale: float = 7.0
    width: int = 0  # 0: the training resolution
    height: int = 0


@dataclass
class OutputConfig:
    dir: str = ""
    name: str = "my_style"
    save_dtype: str = "fp16"  # fp16 | bf16 | fp32
    trigger: str = ""
    author: str = ""
    description: str = ""


@dataclass
class Config:
    schema_version: int = SCHEMA_VERSION
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some keys changed: `cfg.replace(train={"max_steps": 10})`."""
        data = self.to_dict()
        for name, values in sections.items():
            data[name].update(values)
        return from_dict(data, check=False)


CHOICES: dict[str, tuple[str, ...]] = {
    "model.kind": ("auto", *KINDS),
    "model.prediction": ("auto", "epsilon", "v"),
    "network.targets": ("attention", "attention+ff"),
    "train.lr_scheduler": ("constant", "cosine", "linear"),
    "train.optimizer": ("adamw", "adamw8bit"),
    "train.mixed_precision": ("auto", "no", "fp16", "bf16"),
    "train.base_weights": ("auto", "fp32", "fp16", "bf16", "fp8"),
    "output.save_dtype": ("fp16", "bf16", "fp32"),
}

# (key, low, high, inclusive-low): ranges an artist can mistype.
RANGES: list[tuple[str, float, float]] = [
    ("model.clip_skip", 1, 12),
    ("dataset.repeats", 1, 10_000),
    ("dataset.keep_tokens", 0, 1_000),
    ("dataset.caption_dropout", 0.0, 1.0),
    ("dataset.min_bucket_side", 64, 4096),
    ("dataset.max_bucket_side", 64, 8192),
    ("dataset.bucket_step", 8, 512),
    ("network.rank", 1, 1024),
    ("network.alpha", 1e-6, 1e6),
    ("network.text_encoder_lr", 0.0, 1.0),
    ("network.dropout", 0.0, 0.9),
    ("train.max_steps", 1, 10_000_000),
    ("train.batch_size", 1, 1024),
    ("train.gradient_accumulation", 1, 1024),
    ("train.learning_rate", 1e-10, 1.0),
    ("train.warmup_steps", 0, 10_000_000),
    ("train.weight_decay", 0.0, 1.0),
    ("train.max_grad_norm", 0.0, 1e6),
    ("train.resolution", 64, 4096),
    ("train.seed", 0, 2**32 - 1),
    ("train.noise_offset", 0.0, 1.0),
    ("train.min_snr_gamma", 0.0, 100.0),
    ("train.checkpoint_every", 0, 10_000_000),
    ("train.keep_checkpoints", 1, 1000),
    ("train.log_every", 1, 100_000),
    ("train.num_workers", 0, 64),
    ("sample.every", 0, 10_000_000),
    ("sample.steps", 1, 1000),
    ("sample.guidance_scale", 0.0, 50.0),
    ("sample.width", 0, 4096),
    ("sample.height", 0, 4096),
]

SECTIONS = {f.name: f for f in fields(Config) if f.name != "schema_version"}


# Ordered migrations: MIGRATIONS[n] turns a schema n dict into a schema n+1 dict.
MIGRATIONS: dict[int, Any] = {}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version < 1:
        raise ConfigError([Problem("schema_version", f"is {version!r}; it must be a whole number ≥ 1 (this app writes {SCHEMA_VERSION}).")])
    if version > SCHEMA_VERSION:
        raise ConfigError([Problem("schema_version", f"is {version}, newer than this app understands ({SCHEMA_VERSION}); update LoRA Studio.")])
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
    data["schema_version"] = SCHEMA_VERSION
    return data


def _coerce(key: str, value: Any, typ: Any, problems: list[Problem]) -> Any:
    origin = get_origin(typ)
    if origin is list:
        (item_type,) = get_args(typ)
        if not isinstance(value, list):
            problems.append(Problem(key, f"must be a list (for example [\"...\"]), not {value!r}."))
            return None
        return [_coerce(f"{key}[{i}]", v, item_type, problems) for i, v in enumerate(value)]
    if typ is bool:
        if isinstance(value, bool):
            return value
        problems.append(Problem(key, f"must be true or false, not {value!r}."))
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        problems.append(Problem(key, f"must be a whole number, not {value!r}."))
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        problems.append(Problem(key, f"must be a number, not {value!r}."))
    elif typ is str:
        if isinstance(value, str):
            return value
        problems.append(Problem(key, f"must be text in quotes, not {value!r}."))
    else:  # pragma: no cover - schema error
        raise TypeError(typ)
    return None


def _from_dict(data: dict[str, Any], problems: list[Problem]) -> Config:
    cfg = Config()
    for name, value in data.items():
        if name == "schema_version":
            continue
        if name not in SECTIONS:
            problems.append(Problem(name, f"is not a known section; use one of {', '.join(SECTIONS)}."))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(name, f"must be a table ([{name}])."))
            continue
        section = getattr(cfg, name)
        hints = get_type_hints(type(section))
        for key, raw in value.items():
            full = f"{name}.{key}"
            if key not in hints:
                close = [k for k in hints if k.startswith(key[:3])]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(Problem(full, f"is not a known setting{hint}; remove it or fix its name."))
                continue
            coerced = _coerce(full, raw, hints[key], problems)
            if coerced is not None:
                setattr(section, key, coerced)
    return cfg


def validate(cfg: Config) -> list[Problem]:
    """Every problem with the values (not the files they point to), each naming the key and the fix."""
    problems: list[Problem] = []
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            problems.append(Problem(key, f"is {value!r}; choose one of {', '.join(repr(a) for a in allowed)}."))
    for key, low, high in RANGES:
        value = _get(cfg, key)
        if not low <= value <= high:
            problems.append(Problem(key, f"is {value}; it must be between {low:g} and {high:g}."))
    if cfg.dataset.min_bucket_side > cfg.dataset.max_bucket_side:
        problems.append(Problem("dataset.min_bucket_side", f"({cfg.dataset.min_bucket_side}) is larger than dataset.max_bucket_side ({cfg.dataset.max_bucket_side}); make it smaller."))
    if not 0 <= cfg.train.epochs <= 100_000:
        problems.append(Problem("train.epochs", f"is {cfg.train.epochs}; set it to 0 to train for train.max_steps steps, or to the number of whole epochs to train (up to 100000)."))
    if cfg.train.resolution % 8:
        problems.append(Problem("train.resolution", f"is {cfg.train.resolution}; it must be a multiple of 8 (512, 768 and 1024 are usual)."))
    for key in ("sample.width", "sample.height"):
        if _get(cfg, key) % 8:
            problems.append(Problem(key, f"is {_get(cfg, key)}; it must be 0 (the training resolution) or a multiple of 8."))
    if not cfg.model.base.strip():
        problems.append(Problem("model.base", "is empty; set it to a diffusers model folder or a .safetensors checkpoint."))
    if not cfg.dataset.path.strip():
        problems.append(Problem("dataset.path", "is empty; set it to the folder that holds your images."))
    if not cfg.output.dir.strip():
        problems.append(Problem("output.dir", "is empty; set it to the folder where this run should write its files."))
    name = cfg.output.name
    if not name or any(c in name for c in '/\\:*?"<>|') or name.startswith("."):
        problems.append(Problem("output.name", f"is {name!r}; use a plain file name without / \\ : * ? \" < > | (for example \"my_style\")."))
    return problems


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def from_dict(data: dict[str, Any], *, check: bool = True) -> Config:
    problems: list[Problem] = []
    cfg = _from_dict(migrate(dict(data)), problems)
    if check:
        problems += validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def resolve_paths(cfg: Config, base_dir: Path) -> Config:
    """Paths in a config file are relative to the file's folder (a project moves as one folder)."""
    out = cfg.replace()
    for section, key in (("model", "base"), ("model", "vae"), ("dataset", "path"), ("output", "dir")):
        value = _get(out, f"{section}.{key}")
        if value:
            p = Path(value).expanduser()
            if not p.is_absolute():
                p = (base_dir / p).resolve()
            setattr(getattr(out, section), key, str(p))
    return out


def load(path: str | Path, *, check: bool = True) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("config", f"file {path} does not exist; check the path or create it with the app.")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem("config", f"file {path} is not UTF-8 text; re-save it as UTF-8 in your text editor.")]) from None
    except OSError as e:
        raise ConfigError([Problem("config", f"file {path} cannot be read ({e.strerror}); check its permissions.")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([Problem("config", f"file {path} is not valid TOML ({e}); fix the line it names.")]) from None
    # Type problems and value problems are reported together: the artist fixes the file in one pass.
    problems: list[Problem] = []
    cfg = resolve_paths(_from_dict(migrate(dict(data)), problems), path.parent.resolve())
    if check:
        problems += validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def dumps(cfg: Config) -> str:
    data = cfg.to_dict()
    return tomli_w.dumps({"schema_version": data.pop("schema_version"), **data})


def save(cfg: Config, path: str | Path) -> None:
    atomic_write_text(Path(path), dumps(cfg))
