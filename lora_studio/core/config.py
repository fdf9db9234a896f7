"""The run/project configuration: a typed schema, read from and written to TOML.

The TOML keys are a public contract (scripts and the app write them). Validation returns every problem
at once, each naming the key and the fix, so the artist fixes a config in one pass.

Each key is declared once, as a `setting(default, label, help, min=, max=, choices=)` field of its
section: the label and help the app shows, the range validation checks and the editors allow. A new key
is one such field (plus, to show it in the app, its place in gui/settings/fields.py's layout).
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
from lora_studio.core import optimizers
from lora_studio.core.model_kinds import KINDS

SCHEMA_VERSION = 1


def setting(default: Any = dataclasses.MISSING, label: str = "", help: str = "", *, min: float | None = None,
            max: float | None = None, choices: tuple[str, ...] | None = None, out_of_range: str = "",
            factory: Any = None, choice_help: dict[str, str] | None = None) -> Any:
    """A schema field that carries what the app shows and checks: its label, a line of help, the range an
    artist can mistype (min, max; `out_of_range` replaces the plain "must be between" sentence) and the
    fixed choices (with a line of help for each, `choice_help`, where the choices need saying).
    `key_info(key)` reads it back; validation and the Settings tab both use it."""
    meta = {"label": label, "help": help, "min": min, "max": max, "choices": choices, "out_of_range": out_of_range,
            "choice_help": dict(choice_help or {})}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    base: str = setting("", "Base model", "A diffusers model folder or a single .safetensors checkpoint.")
    kind: str = setting("auto", "Model family", "auto reads it from the model.", choices=("auto", *KINDS))
    prediction: str = setting("auto", "Prediction", "auto reads it from the model (its v_pred key, metadata or .yaml); "
                              "v for SD2 768 and NoobAI v-pred models.",
                              choices=("auto", "epsilon", "v"))
    clip_skip: int = setting(1, "CLIP skip", "2 for many anime models.", min=1, max=12)
    # The pretrained VAE is used as it is; SDXL's fp16 VAE NaN problem is avoided by encoding in fp32.
    vae: str = setting("", "VAE", "Leave empty to use the model's own.")


@dataclass
class RegularizationConfig:
    """[dataset.regularization]: prior-preservation pictures (DreamBooth's class images, kohya's reg_data_dir).

    Pictures of the same kind of thing in other styles (usually made by the base model itself from the
    captions, without the trigger) that the LoRA must leave as they are, so it learns the style without
    dragging everything else along. Each epoch holds as many of them as training images (kohya's rule:
    cycled when there are fewer, the rest left out when there are more), shuffled into the same batches,
    so they double the steps of an epoch."""

    path: str = setting("", "Regularisation folder", "Pictures the LoRA should leave alone (captioned like the dataset, "
                        "without the trigger); empty for none. They double the steps of an epoch.")
    repeats: int = setting(1, "Regularisation repeats", "Times each regularisation picture is used before the next one "
                           "(N_name folders set their own).", min=1, max=10_000)
    loss_weight: float = setting(1.0, "Regularisation weight", "How much the regularisation pictures count against "
                                 "the training images: 1 is equal, lower lets the style take more.", min=0.0, max=100.0)


@dataclass
class DatasetConfig:
    path: str = setting("", "Image folder", "The folder that holds your images (and their .txt captions).")
    default_caption: str = setting("", "Default caption", "For images without a caption file.")
    caption_extension: str = setting(".txt", "Caption file extension", "The caption beside image.png is image.txt.")
    repeats: int = setting(1, "Repeats", "Times each image is seen per epoch (N_name folders set their own).", min=1, max=10_000)
    exclude: list[str] = setting(label="Excluded images", help="Images left out of training, relative to the image folder; the files are not touched.",
                                 factory=list)
    shuffle_tags: bool = setting(False, "Shuffle tags", "Shuffle comma-separated tags each time an image is seen.")
    keep_tokens: int = setting(0, "Keep first tags", "Tags kept in place when shuffling (your trigger word).", min=0, max=1_000)
    caption_dropout: float = setting(0.0, "Caption dropout", "Chance of training an image with no caption.", min=0.0, max=1.0)
    flip: bool = setting(False, "Flip images", "Mirror images at random; doubles the variety for symmetric styles.")
    random_crop: bool = setting(False, "Random crop", "Crop a random part of an image that is larger than its bucket, not the centre.")
    # Masks (core/dataset.find_mask): masks/<stem>.png beside the image, else the image's own alpha channel.
    masked_loss: bool = setting(False, "Masked loss", "Train only where each image's mask is white (its alpha channel, or a "
                                "same-name file in a masks folder beside it); black is ignored, grey counts partly.")
    # 0 is automatic (smallest_bucket_side): a fixed 256 would leave no bucket at all below 256 px.
    min_bucket_side: int = setting(0, "Smallest bucket side", "Images train at shapes whose sides are at least this. 0 picks it "
                                   "from the resolution: half of it, at most 256, in whole bucket steps.", min=0, max=4096)
    max_bucket_side: int = setting(1024, "Largest bucket side", "No training shape has a side longer than this.", min=64, max=8192)
    bucket_step: int = setting(64, "Bucket step", "Training shapes have sides that are multiples of this.", min=8, max=512)
    # Held-out images, never trained on, for the validation loss: a fraction (< 1) or a count (>= 1) of the
    # dataset's images chosen with train.seed, and/or a folder of its own (captioned like the dataset).
    validation_split: float = setting(0.0, "Held-out images", "Images never trained on, for the validation loss: a share "
                                      "(below 1) or a number (1 or more) of the images.", min=0.0, max=100_000)
    validation_path: str = setting("", "Validation folder", "A folder of held-out images of its own, captioned like the dataset.")
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)


@dataclass
class NetworkConfig:
    rank: int = setting(16, "Rank", "How much the LoRA can hold. 16 is plenty for most styles; 32 for detailed ones.", min=1, max=1024)
    alpha: float = setting(16.0, "Alpha", "Scales the LoRA's strength during training; alpha = rank is the usual choice.", min=1e-6, max=1e6)
    targets: str = setting("attention", "Train layers", "Attention only is the classic style LoRA; +ff also trains feed-forward layers.",
                           choices=("attention", "attention+ff"))
    train_text_encoder: bool = setting(False, "Train the text encoder", "Also teach the text encoder; rarely needed for a style.")
    text_encoder_lr: float = setting(5e-5, "Text encoder learning rate", "Used only when the text encoder trains.", min=0.0, max=1.0)
    dropout: float = setting(0.0, "Dropout", "Randomly drops LoRA weights while training; 0 is usual.", min=0.0, max=0.9)
    # The LyCORIS family (engine/training/lora.py builds each with peft; export-contract.md "LyCORIS files").
    type: str = setting("lora", "Network type", "What kind of LoRA to train; lora is the classic one every UI loads.",
                        choices=("lora", "locon", "loha", "lokr"),
                        choice_help={
                            "lora": "The classic LoRA, on the attention layers (and feed-forward with +ff).",
                            "locon": "LoRA that also trains the convolutions: more of the style's texture and line.",
                            "loha": "LoHa (LyCORIS): two low-rank pairs multiplied, more detail for the same rank.",
                            "lokr": "LoKr (LyCORIS): a Kronecker product of small matrices; very small files.",
                        })
    dora: bool = setting(False, "DoRA", "Learns each weight's strength apart from its direction; often truer to the style, a little slower. "
                          "ComfyUI and Forge load it; AUTOMATIC1111's own loader expects the other axis: leave it off for A1111.")
    conv_rank: int = setting(8, "Convolution rank", "How much the LoRA holds in the convolution layers; 4 to 16 is usual.", min=1, max=1024)
    conv_alpha: float = setting(4.0, "Convolution alpha", "Scales the convolution layers' strength, as alpha does for the rest.",
                                min=1e-6, max=1e6)
    factor: int = setting(-1, "LoKr factor", "How LoKr splits each layer: -1 splits it evenly; 4 to 16 gives bigger, finer files.",
                          min=-1, max=1024)
    full_matrix: bool = setting(False, "LoKr full matrix", "Trains LoKr's second factor whole instead of at the rank: larger file, more capacity.")

    @property
    def uses_dora(self) -> bool:
        # DoRA is a LoRA / LoCon option; with loha or lokr the setting is kept (and hidden in the app) but unused.
        return self.dora and self.type in ("lora", "locon")


@dataclass
class TrainConfig:
    max_steps: int = setting(1500, "Steps", "How long to train, in steps.", min=1, max=10_000_000)
    # 0: train max_steps steps. > 0: train this many whole epochs; the engine works out the steps from the
    # dataset when it starts (core/budget), so "10 epochs" stays 10 epochs after images are added.
    epochs: int = setting(0, "Epochs", "Whole passes over the images; 0 trains for the number of steps instead.", min=0, max=100_000,
                          out_of_range="set it to 0 to train for {train.max_steps} instead, or to the number of whole epochs to train (up to 100000).")
    batch_size: int = setting(1, "Batch size", "Images per step. Larger is smoother but needs more memory.", min=1, max=1024)
    gradient_accumulation: int = setting(1, "Gradient accumulation", "Add up this many batches per step: a bigger batch without the memory.",
                                         min=1, max=1024)
    learning_rate: float = setting(1e-4, "Learning rate", "1e-4 is the usual start; lower it if samples burn or change too fast. "
                                   "Prodigy finds the learning rate itself — leave it at 1.", min=1e-10, max=1.0)
    # Schedules are diffusers.optimization.get_scheduler's; "constant" ignores the warm-up (as it always did
    # here), "constant_with_warmup" is constant after it.
    lr_scheduler: str = setting("constant", "Schedule", "How the learning rate changes over the run.",
                                choices=("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial"),
                                choice_help={
                                    "constant": "The same learning rate throughout (no warm-up).",
                                    "constant_with_warmup": "Ramps up over the warm-up steps, then stays the same.",
                                    "cosine": "Falls smoothly to 0 by the last step, after the warm-up.",
                                    "cosine_with_restarts": "Falls to 0 and jumps back up, as many times as the restarts say.",
                                    "linear": "Falls in a straight line to 0 by the last step, after the warm-up.",
                                    "polynomial": "Falls to 0 along a curve: power 1 is linear, above 1 it falls faster at first.",
                                })
    lr_cycles: int = setting(1, "Restarts", "How many times the cosine schedule falls to 0 and starts again.", min=1, max=1000)
    lr_power: float = setting(1.0, "Schedule power", "The polynomial schedule's curve: 1 is a straight line, 2 falls faster at first.",
                              min=0.01, max=100.0)
    warmup_steps: int = setting(0, "Warm-up steps", "Steps over which the learning rate ramps up from 0 (not with the "
                                "constant schedule: choose constant_with_warmup).", min=0, max=10_000_000)
    optimizer: str = setting("adamw", "Optimizer", "adamw is the usual choice; the others save memory or find the learning rate themselves.",
                             choices=optimizers.NAMES, choice_help=optimizers.CHOICE_HELP)
    # Extra keyword arguments for the chosen optimizer (a TOML table, [train.optimizer_args]), checked against
    # what it takes (core/optimizers.OPTIMIZERS) when the config is loaded.
    optimizer_args: dict[str, Any] = setting(label="Optimizer arguments", help="Extra settings for the chosen optimizer, "
                                             "e.g. d_coef = 0.8 or betas = [0.9, 0.99], in the [train.optimizer_args] table.",
                                             factory=dict)
    weight_decay: float = setting(1e-2, "Weight decay", "Pulls the LoRA's weights gently towards 0; 0.01 is usual.", min=0.0, max=1.0)
    max_grad_norm: float = setting(1.0, "Gradient clipping", "0 turns it off.", min=0.0, max=1e6)
    resolution: int = setting(512, "Resolution", "512 for SD 1.5, 768 for SD 2 768-v, 1024 for SDXL.", min=64, max=4096)
    seed: int = setting(42, "Seed", "The same seed and settings train the same LoRA again.", min=0, max=2**32 - 1)
    # auto: bf16 where supported, fp16 on older GPUs, fp32 on CPU.
    mixed_precision: str = setting("auto", "Precision", "auto picks bf16 where the GPU supports it.", choices=("auto", "no", "fp16", "bf16"))
    base_weights: str = setting("auto", "Base weights stored as", "fp16/bf16/fp8 save memory; auto decides from the GPU.",
                                choices=("auto", "fp32", "fp16", "bf16", "fp8"))
    gradient_checkpointing: bool = setting(False, "Gradient checkpointing", "Saves a lot of memory for some speed.")
    cache_latents: bool = setting(True, "Cache image latents", "Encode each image once; faster, and the VAE leaves the GPU.")
    cache_text_encoder: bool = setting(True, "Cache caption embeddings", "Only when the text encoder does not train.")
    noise_offset: float = setting(0.0, "Noise offset", "Around 0.05 helps very dark or very bright styles.", min=0.0, max=1.0)
    min_snr_gamma: float = setting(0.0, "Min-SNR gamma", "5 steadies training (Hang et al. 2023); 0 turns it off.", min=0.0, max=100.0)
    # Which noise levels the steps train on (engine/training/timesteps.py cites each sampler).
    min_timestep: int = setting(0, "Lowest timestep", "Train only from this noise level up (0-999); 0 keeps the finest detail in.",
                                min=0, max=999)
    max_timestep: int = setting(1000, "Highest timestep", "Train only below this noise level (1-1000); 1000 keeps the coarsest layout in.",
                                min=1, max=1000)
    timestep_sampling: str = setting("uniform", "Timestep sampling", "Which noise levels get the most steps.",
                                     choices=("uniform", "logit_normal", "style"))
    logit_mean: float = setting(0.0, "Logit-normal mean", "Where the logit-normal sampler centres (0: the middle noise levels).",
                                min=-10.0, max=10.0)
    logit_std: float = setting(1.0, "Logit-normal spread", "How widely the logit-normal sampler spreads (1 is SD3's).", min=0.01, max=10.0)
    style_snr_mean: float = setting(-3.0, "Style sampler log-SNR mean", "Lower trains more at high noise, where style lives.",
                                    min=-20.0, max=20.0)
    style_snr_std: float = setting(2.0, "Style sampler log-SNR spread", "How widely the style sampler spreads around its mean.",
                                   min=0.01, max=20.0)
    loss: str = setting("mse", "Loss", "huber lets a few odd pictures pull less than mse.", choices=("mse", "huber"))
    huber_schedule: str = setting("snr", "Huber schedule", "How the Huber loss's threshold changes with the noise level.",
                                  choices=("snr", "exponential", "constant"))
    huber_c: float = setting(0.1, "Huber threshold", "Errors above it count linearly, not squared; 0.1 is usual.", min=1e-4, max=10.0)
    debiased_estimation: bool = setting(False, "Debiased estimation", "Weights each step by 1/√SNR (Yu et al. 2024): less weight on fine detail.")
    # Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed": the schedule rescaled so
    # its last timestep is pure noise. On by itself for a model file with a `ztsnr` key (NoobAI-XL v-pred).
    zero_terminal_snr: bool = setting(False, "Zero terminal SNR", "Train the noisiest step on pure noise, as v-prediction "
                                      "models like NoobAI do; fixes grey, washed-out images. On by itself when the model says so.")
    # An exponential moving average of the LoRA weights (engine/training/ema.py): samples, validation, checkpoints
    # and exports use it.
    ema: bool = setting(False, "Average the weights (EMA)", "Keep a smoothed average of the LoRA over the last steps and "
                        "use it for samples and the exported file: steadier results, a little more memory.")
    ema_decay: float = setting(0.999, "EMA decay", "How slowly the average follows training: 0.999 averages about the "
                               "last 1000 steps, 0.99 the last 100.", min=0.5, max=0.99999)
    ema_on_cpu: bool = setting(False, "Keep the average in computer memory", "Holds the EMA off the GPU: saves GPU memory, "
                               "each step a little slower.")
    checkpoint_every: int = setting(250, "Save a checkpoint every", "Steps between resumable checkpoints (and exports to choose from).",
                                    min=0, max=10_000_000)
    # The validation loss (when dataset.validation_split or validation_path holds images out): every N
    # steps; 0 = at every sample step (sample.every), so it sits beside the samples it explains.
    validate_every: int = setting(0, "Validation loss every", "Steps between validation losses; 0 measures it with every set of samples.",
                                  min=0, max=10_000_000)
    keep_checkpoints: int = setting(3, "Keep checkpoints", "Older ones are deleted.", min=1, max=1000)
    log_every: int = setting(10, "Read the loss every", "Steps between loss readings (each one waits for the GPU).", min=1, max=100_000)
    compile: bool = setting(False, "Compile the model", "torch.compile: faster steps after a slow first one.")
    channels_last: bool = setting(True, "Channels-last layout", "A memory layout most GPUs run convolutions faster in.")
    num_workers: int = setting(0, "Data loader workers", "Processes that read images beside training; 0 reads them in the training process.",
                               min=0, max=64)


@dataclass
class SampleConfig:
    every: int = setting(250, "Make samples every", "Steps between sample images; 0 turns sampling off (a step-0 baseline is always made "
                         "when there are prompts).", min=0, max=10_000_000)
    # At the end of a run, score the sampled checkpoints (style, prompts, validation loss) and recommend one.
    rank: bool = setting(True, "Recommend a checkpoint", "At the end of a run, score the sampled checkpoints and recommend one.")
    prompts: list[str] = setting(label="Sample prompts", help="Sample images are made from these while training, so you can watch the style arrive.",
                                 factory=list)
    negative_prompt: str = setting("", "Negative prompt", "What the samples should not show.")
    seed: int = setting(1234, "Sample seed", "Fixed, so samples from different steps compare fairly.")
    steps: int = setting(25, "Sampling steps", "Denoising steps per sample image.", min=1, max=1000)
    guidance_scale: float = setting(7.0, "Guidance scale", "How closely samples follow the prompt; 7 is usual.", min=0.0, max=50.0)
    width: int = setting(0, "Sample width", "0: the training resolution.", min=0, max=4096)
    height: int = setting(0, "Sample height", "0: the training resolution.", min=0, max=4096)


@dataclass
class OutputConfig:
    dir: str = setting("", "Run folder", "Where a run writes its files; the app sets it for each run.")
    name: str = setting("my_style", "LoRA file name", "The exported file's name, without .safetensors.")
    save_dtype: str = setting("fp16", "Save as", "fp16 loads everywhere.", choices=("fp16", "bf16", "fp32"))
    trigger: str = setting("", "Trigger word", "A rare word that calls up your style in prompts. Add it to the captions in the Dataset tab.")
    author: str = setting("", "Author", "Written into the LoRA's metadata.")
    description: str = setting("", "Description", "Written into the LoRA's metadata.")


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

    def get(self, key: str) -> Any:
        """The value of a "section.key": `cfg.get("train.resolution")`."""
        key_info(key)  # a misspelt key is a KeyError, not an AttributeError from deep inside
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part)
        return value

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some keys changed: `cfg.replace(train={"max_steps": 10})`; a sub-table's dict is merged
        (`cfg.replace(dataset={"regularization": {"repeats": 2}})` keeps its path)."""
        data = self.to_dict()
        for name, values in sections.items():
            _merge(data[name], values, SECTIONS[name].default_factory)
        return from_dict(data, check=False)

    def with_changes(self, changes: dict[str, Any]) -> "Config":
        """A copy with some keys changed: `cfg.with_changes({"train.max_steps": 10, "dataset.regularization.path": ""})`."""
        sections: dict[str, Any] = {}
        for key, value in changes.items():
            key_info(key)
            *tables, name = key.split(".")
            table = sections
            for part in tables:
                table = table.setdefault(part, {})
            table[name] = value
        return self.replace(**sections)


def _merge(into: dict[str, Any], values: dict[str, Any], table: Any) -> None:
    """`values` into the dict of `table` (a section's dataclass): a sub-table's values are merged into it, any
    other value (a list, the [train.optimizer_args] dict) replaces the old one."""
    hints = get_type_hints(table)
    for key, value in values.items():
        if isinstance(value, dict) and _is_table(hints.get(key)):
            _merge(into[key], value, hints[key])
        else:
            into[key] = value


@dataclass(frozen=True)
class KeyInfo:
    """What the schema says of one setting (from its `setting(...)` field)."""

    key: str  # "section.key"
    type: Any
    default: Any
    label: str
    help: str
    min: float | None
    max: float | None
    choices: tuple[str, ...] | None
    out_of_range: str
    choice_help: dict[str, str] = field(default_factory=dict)  # a line for each choice that needs one


def _is_table(typ: Any) -> bool:
    """A sub-table of a section ([dataset.regularization]): a dataclass of settings of its own."""
    return isinstance(typ, type) and dataclasses.is_dataclass(typ)


def _table_infos(prefix: str, cls: Any) -> dict[str, KeyInfo]:
    out = {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        key = f"{prefix}.{f.name}"
        if _is_table(hints[f.name]):
            out.update(_table_infos(key, hints[f.name]))
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        m = f.metadata
        out[key] = KeyInfo(key, hints[f.name], default, m["label"], m["help"], m["min"], m["max"], m["choices"],
                           m["out_of_range"], m["choice_help"])
    return out


def _key_infos() -> dict[str, KeyInfo]:
    out = {}
    for section in fields(Config):
        if section.name != "schema_version":
            out.update(_table_infos(section.name, section.default_factory))  # type: ignore[arg-type]
    return out


def key_info(key: str) -> KeyInfo:
    """The label, help, range and choices of a "section.key" (KeyError for a key the schema lacks)."""
    return KEYS[key]


KEYS: dict[str, KeyInfo] = _key_infos()
CHOICES: dict[str, tuple[str, ...]] = {k: i.choices for k, i in KEYS.items() if i.choices}


def smallest_bucket_side(cfg: Config) -> int:
    """dataset.min_bucket_side, or when it is 0 (automatic) half the resolution, at most 256 and at most the
    largest side, rounded down to a whole bucket step (and at least one step): 256 at 512 px and above, 64
    at 128 px."""
    d = cfg.dataset
    if d.min_bucket_side > 0:
        return d.min_bucket_side
    step = max(1, d.bucket_step)
    return max(step, min(256, cfg.train.resolution // 2, d.max_bucket_side) // step * step)


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
    if origin is dict:  # a table of its own ([train.optimizer_args]); what it holds is checked in validate()
        if isinstance(value, dict):
            return dict(value)
        problems.append(Problem(key, f"must be a table ([{key}] with name = value lines), not {value!r}."))
        return None
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
        _fill(getattr(cfg, name), name, value, problems)
    return cfg


def _fill(table: Any, prefix: str, values: dict[str, Any], problems: list[Problem]) -> None:
    """Set a section's (or sub-table's) fields from its TOML table, noting each problem."""
    hints = get_type_hints(type(table))
    for key, raw in values.items():
        full = f"{prefix}.{key}"
        if key not in hints:
            close = [k for k in hints if k.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(Problem(full, f"is not a known setting{hint}; remove it or fix its name."))
        elif _is_table(hints[key]):
            if isinstance(raw, dict):
                _fill(getattr(table, key), full, raw, problems)
            else:
                problems.append(Problem(full, f"must be a table ([{full}] with name = value lines), not {raw!r}."))
        else:
            coerced = _coerce(full, raw, hints[key], problems)
            if coerced is not None:
                setattr(table, key, coerced)


def validate(cfg: Config) -> list[Problem]:
    """Every problem with the values (not the files they point to), each naming the key and the fix.

    Messages continue their key ("is 0; it must be ...") and write other keys as {section.key}
    placeholders (core/errors.spell), so the CLI shows keys and the app the labels on screen."""
    problems: list[Problem] = []
    for key, info in KEYS.items():
        value = cfg.get(key)
        if info.choices and value not in info.choices:
            problems.append(Problem(key, f"is {value!r}; choose one of {', '.join(repr(a) for a in info.choices)}."))
        low = -math.inf if info.min is None else info.min
        high = math.inf if info.max is None else info.max
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
            problems.append(Problem(key, f"is {value}; " + (info.out_of_range or f"it must be between {low:g} and {high:g}.")))
    t = cfg.train
    problems += optimizers.arg_problems(t.optimizer, t.optimizer_args)
    problems += optimizers.schedule_problems(t.optimizer, t.optimizer_args, t.lr_scheduler)
    if cfg.network.factor == 0:
        problems.append(Problem("network.factor", "is 0; use -1 to split each layer evenly, or a whole number such as 8."))
    if t.min_timestep >= t.max_timestep:
        problems.append(Problem("train.min_timestep", f"is {t.min_timestep}, not below {{train.max_timestep}} at {t.max_timestep}; "
                                                      "make it smaller (0 keeps every noise level)."))
    smallest = smallest_bucket_side(cfg)
    if smallest > cfg.dataset.max_bucket_side:
        problems.append(Problem("dataset.min_bucket_side", f"is {smallest}, larger than {{dataset.max_bucket_side}} at {cfg.dataset.max_bucket_side}; make it smaller."))
    if cfg.train.resolution % 8:
        problems.append(Problem("train.resolution", f"is {cfg.train.resolution}; it must be a multiple of 8 (512, 768 and 1024 are usual)."))
    for key in ("sample.width", "sample.height"):
        if cfg.get(key) % 8:
            problems.append(Problem(key, f"is {cfg.get(key)}; it must be 0 (the training resolution) or a multiple of 8."))
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


def from_dict(data: dict[str, Any], *, check: bool = True) -> Config:
    problems: list[Problem] = []
    cfg = _from_dict(migrate(dict(data)), problems)
    if check:
        problems += validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


# The keys that hold paths: relative to the config file's folder on disk (core/project keeps them so).
PATH_KEYS = ("model.base", "model.vae", "dataset.path", "dataset.validation_path", "dataset.regularization.path", "output.dir")


def resolve_paths(cfg: Config, base_dir: Path) -> Config:
    """Paths in a config file are relative to the file's folder (a project moves as one folder)."""
    changes = {}
    for key in PATH_KEYS:
        value = cfg.get(key)
        if value:
            p = Path(value).expanduser()
            changes[key] = str(p if p.is_absolute() else (base_dir / p).resolve())
    return cfg.with_changes(changes)


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
