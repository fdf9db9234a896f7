"""The base-model architectures LoRA Studio trains on, defined once: their keys, their names and their
shipped configs.

A kind's key is what the settings (`model.kind`), the events (`model_kind`), checkpoints and exports
store; `LABELS` is how a message names it in a sentence ("an SDXL model"), `NAMES` how a report titles
it ("Stable Diffusion XL"). A single-file checkpoint carries no architecture config, so it is built
from the shipped diffusers config folder of its kind (`resources/models/<config name>`, no weights).
"""

from __future__ import annotations

from pathlib import Path

from lora_studio.core.resources import resource

KINDS = ("sd1", "sd2", "sdxl")
LABELS = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}
# "SD1.x, SD2.x or SDXL", for a sentence that lists what can be trained on.
ANY_LABEL = ", ".join(list(LABELS.values())[:-1]) + " or " + list(LABELS.values())[-1]
NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "Stable Diffusion XL"}
# SD2 ships two config folders: the 768 v-model also upcasts attention to fp32.
CONFIG_NAMES = ("sd1", "sd2", "sd2-v", "sdxl")


def config_name(kind: str, prediction: str = "epsilon") -> str:
    """The shipped config folder's name for an architecture and its prediction type."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return "sd2-v" if (kind == "sd2" and prediction == "v") else kind


def shipped_config(kind: str, prediction: str = "epsilon") -> Path:
    """The shipped diffusers config folder for an architecture (no weights, no tokenizer)."""
    return resource("models", config_name(kind, prediction))
