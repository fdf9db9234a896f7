"""Where each setting is on screen, and how the app names it in a message.

The labels, help and ranges are the schema's (core/config's `setting(...)` fields); this module holds
only what is the app's own: which keys the Settings tab shows up front, the Advanced section's groups
in their order, and the keys set elsewhere (the Dataset tab). Messages from core name settings as
{section.key} placeholders, or as bare keys once spelled for the CLI and the event stream; `say` writes
both as the label the artist can find: “Smallest bucket side” (Advanced settings).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from lora_studio.core.config import KEYS, Config
from lora_studio.core.errors import Problem, UserError
from lora_studio.gui.store import RUN_ONLY_KEYS

# The Settings tab's first two boxes (Base model, Training).
ESSENTIALS = ("model.base", "train.max_steps", "train.epochs", "network.rank", "train.learning_rate", "train.resolution",
              "train.batch_size", "output.trigger", "sample.prompts")

# The Advanced section: (group, keys), in the order shown. The editor follows the value's type.
ADVANCED: list[tuple[str, list[str]]] = [
    ("Network", ["network.type", "network.alpha", "network.targets", "network.conv_rank", "network.conv_alpha", "network.factor",
                 "network.full_matrix", "network.dora", "network.dropout", "network.train_text_encoder", "network.text_encoder_lr"]),
    ("Training", ["train.lr_scheduler", "train.lr_cycles", "train.lr_power", "train.warmup_steps", "train.optimizer", "train.gradient_accumulation",
                  "train.weight_decay", "train.max_grad_norm", "train.mixed_precision", "train.base_weights",
                  "train.gradient_checkpointing", "train.cache_latents", "train.cache_text_encoder", "train.noise_offset",
                  "train.min_snr_gamma", "train.seed", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.ema", "train.ema_decay", "train.ema_on_cpu"]),
    ("Noise levels and loss", ["train.timestep_sampling", "train.logit_mean", "train.logit_std", "train.style_snr_mean",
                               "train.style_snr_std", "train.min_timestep", "train.max_timestep", "train.loss",
                               "train.huber_schedule", "train.huber_c", "train.debiased_estimation", "train.zero_terminal_snr"]),
    ("Dataset", ["dataset.repeats", "dataset.default_caption", "dataset.shuffle_tags", "dataset.keep_tokens",
                 "dataset.caption_dropout", "dataset.flip", "dataset.random_crop", "dataset.masked_loss", "dataset.min_bucket_side",
                 "dataset.max_bucket_side", "dataset.bucket_step"]),
    ("Samples", ["sample.every", "sample.negative_prompt", "sample.seed", "sample.steps", "sample.guidance_scale",
                 "sample.width", "sample.height"]),
    ("Base model and output", ["model.kind", "model.prediction", "model.clip_skip", "model.vae", "output.name",
                               "output.save_dtype", "output.author", "output.description"]),
]
ADVANCED_KEYS = frozenset(k for _, keys in ADVANCED for k in keys)

# Settings that mean something only with another's value: their rows are hidden otherwise (the value is
# kept, and still saved), so the Advanced section shows only what the chosen schedule uses.
APPLIES: dict[str, Callable[[Config], bool]] = {
    "train.lr_cycles": lambda cfg: cfg.train.lr_scheduler == "cosine_with_restarts",
    "train.lr_power": lambda cfg: cfg.train.lr_scheduler == "polynomial",
    "train.logit_mean": lambda cfg: cfg.train.timestep_sampling == "logit_normal",
    "train.logit_std": lambda cfg: cfg.train.timestep_sampling == "logit_normal",
    "train.style_snr_mean": lambda cfg: cfg.train.timestep_sampling == "style",
    "train.style_snr_std": lambda cfg: cfg.train.timestep_sampling == "style",
    "train.huber_schedule": lambda cfg: cfg.train.loss == "huber",
    "train.huber_c": lambda cfg: cfg.train.loss == "huber",
    "network.conv_rank": lambda cfg: cfg.network.type in ("locon", "loha", "lokr"),
    "network.conv_alpha": lambda cfg: cfg.network.type in ("locon", "loha", "lokr"),
    "network.factor": lambda cfg: cfg.network.type == "lokr",
    "network.full_matrix": lambda cfg: cfg.network.type == "lokr",
    "network.dora": lambda cfg: cfg.network.type in ("lora", "locon"),
    "train.ema_decay": lambda cfg: cfg.train.ema,
    "train.ema_on_cpu": lambda cfg: cfg.train.ema,
}
# The keys whose value decides whether another row applies (the panel re-checks on their change).
APPLIES_ON = frozenset({"train.lr_scheduler", "train.timestep_sampling", "train.loss", "network.type", "train.ema"})

# Set in the Dataset tab (the folder buttons and a drop; Exclude / Include; the Regularisation pictures
# section), not in Settings.
DATASET_TAB = ("dataset.path", "dataset.exclude", "dataset.regularization.path", "dataset.regularization.repeats",
               "dataset.regularization.loss_weight")

# A setting named in a message: as a {section.key} placeholder, or written out as the CLI spells it
# ("lower dataset.min_bucket_side or ..."; not inside a path or a longer name). One pass, so a name
# given in place of a key is never read again.
_ANY_KEY = "|".join(re.escape(k) for k in sorted(KEYS, key=len, reverse=True))
_NAMED = re.compile(r"\{(" + _ANY_KEY + r")\}|(?<![\w./\\-])(" + _ANY_KEY + r")(?![\w/\\-])")


def screen_name(key: str) -> str:
    """How a message names a setting in the app: its label, and where to find it when not up front."""
    info = KEYS.get(key)
    if info is None:
        return key  # "config" (the file itself), "sample.prompts[2]": no label to give
    label = f"“{info.label}”"
    if key in ESSENTIALS:
        return label
    if key in ADVANCED_KEYS:
        return f"{label} (Advanced settings)"
    if key in DATASET_TAB:
        return f"{label} (Dataset tab)"
    if key in RUN_ONLY_KEYS:  # set by the app for each run
        return label
    return f"{label} ({key} in the project's lora_studio.toml)"


def say(text: str) -> str:
    """A message from core or the engine, in the app's words: the settings it names by their labels."""
    return _NAMED.sub(lambda m: screen_name(m.group(1) or m.group(2)), text)


def say_error(error: UserError) -> str:
    """A UserError's message and hint as one text for the app."""
    hint = say(error.hint_template)
    return say(error.template) + (f" {hint}" if hint else "")


def say_problem(problem: Problem) -> str:
    """A validation problem as a whole sentence: “Resolution” is 500; it must be a multiple of 8."""
    text = f"{screen_name(problem.key)} {say(problem.message)}"
    return text[:1].upper() + text[1:]


def say_beside(problem: Problem) -> str:
    """A problem shown under its own field: the field is right there, so "This" stands in for its name,
    and a message that names the file after the field's name ("(model.safetensors) is not there any
    more") names the file alone."""
    message = say(problem.message)
    if message.startswith("is "):
        return f"This {message}"
    return re.sub(r"^\(([^()]+)\) ", r"\1 ", message)
