"""Load a base model (diffusers folder) with zero network access.

`load_models` returns every component the trainer needs plus what it decided (architecture, prediction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lora_studio.core.config import ModelConfig
from lora_studio.core.errors import UserError


@dataclass
class Models:
    kind: str  # sd1 | sd2 | sdxl
    prediction: str  # epsilon | v
    unet: Any
    vae: Any
    text_encoders: list[Any]  # one for SD1/SD2, two for SDXL (CLIP-L, then OpenCLIP-bigG)
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    base_name: str  # the base model's file or folder name (ss_sd_model_name)
    notes: list[str] = field(default_factory=list)  # what was decided and why, for a status event


def detect_folder_kind(path: Path) -> str:
    index = json.loads((path / "model_index.json").read_text())
    if "text_encoder_2" in index and index.get("text_encoder_2", [None])[0]:
        return "sdxl"
    unet_cfg = json.loads((path / "unet" / "config.json").read_text())
    # SD2 uses linear projections in its transformers and a 1024-wide OpenCLIP text encoder.
    if unet_cfg.get("use_linear_projection") or unet_cfg.get("cross_attention_dim") == 1024:
        return "sd2"
    return "sd1"


def _folder_prediction(path: Path) -> str:
    cfg_file = path / "scheduler" / "scheduler_config.json"
    if cfg_file.exists():
        pred = json.loads(cfg_file.read_text()).get("prediction_type", "epsilon")
        return "v" if pred == "v_prediction" else "epsilon"
    return "epsilon"


def load_models(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> Models:
    """Every component of the base model on the CPU, frozen, in `dtype` (the VAE stays fp32)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = Path(cfg.base).expanduser()
    if not path.exists():
        raise UserError(
            f"The base model {path} does not exist.",
            hint="Set model.base to a diffusers model folder or a .safetensors checkpoint.",
            code="model_not_found",
        )
    if not (path.is_dir() and (path / "model_index.json").exists()):
        raise UserError(
            f"The base model {path} is not a diffusers model folder (no model_index.json).",
            hint="Point model.base at a folder with model_index.json, unet/, vae/, text_encoder/ and tokenizer/.",
            code="bad_model",
        )
    kind = cfg.kind if cfg.kind != "auto" else detect_folder_kind(path)
    found = _folder_prediction(path)
    prediction = cfg.prediction if cfg.prediction != "auto" else found
    notes = [f"{kind} model, {prediction} prediction" + (" (from the scheduler config)" if cfg.prediction == "auto" else " (from model.prediction)")]

    kw = dict(local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **kw)
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32, **kw)
    text_encoders = [CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype, **kw)]
    tokenizers = [CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)]
    if kind == "sdxl":
        text_encoders.append(CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", torch_dtype=dtype, **kw))
        tokenizers.append(CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kw))
    sched_file = path / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(sched_file.read_text()) if sched_file.exists() else {}
    scheduler_config["prediction_type"] = "v_prediction" if prediction == "v" else "epsilon"
    for m in (unet, vae, *text_encoders):
        m.requires_grad_(False)
        m.eval()
    return Models(kind, prediction, unet, vae, text_encoders, tokenizers, scheduler_config, path.name, notes)
