"""What the settings form is made of: the Advanced table, and the small builders for its rows.

Kept apart from the panel's behaviour so the list of settings reads like a document: group, key,
label, and one line on when to touch it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QSpinBox, QVBoxLayout, QWidget

from lora_studio.core.config import CHOICES
from lora_studio.gui.store import SciSpinBox

# The Advanced section: (group, [(key, label, tooltip)]). The widget kind follows the value's type.
ADVANCED: list[tuple[str, list[tuple[str, str, str]]]] = [
    ("Network", [
        ("network.alpha", "Alpha", "Scales the LoRA's strength during training; alpha = rank is the usual choice."),
        ("network.targets", "Train layers", "Attention only is the classic style LoRA; +ff also trains feed-forward layers."),
        ("network.dropout", "Dropout", "Randomly drops LoRA weights while training; 0 is usual."),
        ("network.train_text_encoder", "Train the text encoder", "Also teach the text encoder; rarely needed for a style."),
        ("network.text_encoder_lr", "Text encoder learning rate", "Used only when the text encoder trains."),
    ]),
    ("Training", [
        ("train.lr_scheduler", "Schedule", "How the learning rate changes over the run."),
        ("train.warmup_steps", "Warm-up steps", "Steps over which the learning rate ramps up from 0."),
        ("train.optimizer", "Optimizer", "adamw8bit saves memory (needs bitsandbytes)."),
        ("train.gradient_accumulation", "Gradient accumulation", "Add up this many batches per step: a bigger batch without the memory."),
        ("train.weight_decay", "Weight decay", ""),
        ("train.max_grad_norm", "Gradient clipping", "0 turns it off."),
        ("train.mixed_precision", "Precision", "auto picks bf16 where the GPU supports it."),
        ("train.base_weights", "Base weights stored as", "fp16/bf16/fp8 save memory; auto decides from the GPU."),
        ("train.gradient_checkpointing", "Gradient checkpointing", "Saves a lot of memory for some speed."),
        ("train.cache_latents", "Cache image latents", "Encode each image once; faster, and the VAE leaves the GPU."),
        ("train.cache_text_encoder", "Cache caption embeddings", "Only when the text encoder does not train."),
        ("train.noise_offset", "Noise offset", "Around 0.05 helps very dark or very bright styles."),
        ("train.min_snr_gamma", "Min-SNR gamma", "5 steadies training (Hang et al. 2023); 0 turns it off."),
        ("train.seed", "Seed", ""),
        ("train.checkpoint_every", "Save a checkpoint every", "Steps between resumable checkpoints (and exports to choose from)."),
        ("train.keep_checkpoints", "Keep checkpoints", "Older ones are deleted."),
    ]),
    ("Dataset", [
        ("dataset.repeats", "Repeats", "Times each image is seen per epoch (N_name folders set their own)."),
        ("dataset.default_caption", "Default caption", "For images without a caption file."),
        ("dataset.shuffle_tags", "Shuffle tags", "Shuffle comma-separated tags each time an image is seen."),
        ("dataset.keep_tokens", "Keep first tags", "Tags kept in place when shuffling (your trigger word)."),
        ("dataset.caption_dropout", "Caption dropout", "Chance of training an image with no caption."),
        ("dataset.flip", "Flip images", "Mirror images at random; doubles the variety for symmetric styles."),
        ("dataset.random_crop", "Random crop", ""),
        ("dataset.min_bucket_side", "Smallest bucket side", ""),
        ("dataset.max_bucket_side", "Largest bucket side", ""),
        ("dataset.bucket_step", "Bucket step", ""),
    ]),
    ("Samples", [
        ("sample.every", "Make samples every", "Steps between sample images; 0 turns sampling off."),
        ("sample.negative_prompt", "Negative prompt", ""),
        ("sample.seed", "Sample seed", "Fixed, so samples from different steps compare fairly."),
        ("sample.steps", "Sampling steps", ""),
        ("sample.guidance_scale", "Guidance scale", ""),
        ("sample.width", "Sample width", "0: the training resolution."),
        ("sample.height", "Sample height", "0: the training resolution."),
    ]),
    ("Base model and output", [
        ("model.kind", "Model family", "auto reads it from the model."),
        ("model.prediction", "Prediction", "auto reads it from the model; v for SD2 768 models."),
        ("model.clip_skip", "CLIP skip", "2 for many anime models."),
        ("model.vae", "VAE", "Leave empty to use the model's own."),
        ("output.name", "LoRA file name", ""),
        ("output.save_dtype", "Save as", "fp16 loads everywhere."),
        ("output.author", "Author", "Written into the LoRA's metadata."),
        ("output.description", "Description", "Written into the LoRA's metadata."),
    ]),
]

FLOAT_RANGES = {"network.alpha": (0.001, 1e6, 1), "network.dropout": (0, 0.9, 2), "train.weight_decay": (0, 1, 3),
                "train.max_grad_norm": (0, 1e6, 2), "train.noise_offset": (0, 1, 3), "train.min_snr_gamma": (0, 100, 1),
                "dataset.caption_dropout": (0, 1, 2), "sample.guidance_scale": (0, 50, 1)}


def widget_for(key: str, value: Any) -> QWidget:
    """The editor a setting gets from its current value's type (a combo for the keys with fixed choices)."""
    if key in CHOICES:
        combo = QComboBox()
        for choice in CHOICES[key]:
            combo.addItem(choice, choice)
        return combo
    if isinstance(value, bool):
        return QCheckBox()
    if isinstance(value, int):
        return spin(0, 2**31 - 1)
    if isinstance(value, float):
        if key.endswith("_lr"):
            return SciSpinBox()
        low, high, decimals = FLOAT_RANGES.get(key, (0, 1e6, 3))
        box = QDoubleSpinBox(decimals=decimals)
        box.setRange(low, high)
        box.setSingleStep(10 ** -decimals if decimals else 1)
        return box
    return QLineEdit()


def spin(low: int, high: int, *, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setGroupSeparatorShown(True)
    box.setMinimumWidth(90)
    return box


def field_row(widget: QWidget, problem: QLabel) -> QWidget:
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    row = QHBoxLayout()
    row.addWidget(widget)
    if not isinstance(widget, (QLineEdit, QPlainTextEdit)):
        row.addStretch(1)
    layout.addLayout(row)
    layout.addWidget(problem)
    return holder


def stacked(row: QHBoxLayout, *below: QWidget) -> QWidget:
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(4)
    layout.addLayout(row)
    for w in below:
        layout.addWidget(w)
    return holder
