"""What a base model predicts (epsilon or v) and whether it was trained with zero terminal SNR, decided
from its files without loading a weight, so the app says it when the model is chosen and the run says the
same in its status line.

A single file ("auto"): the first rule that applies (`decide_prediction`):
  1. a `v_pred` key in the file (kohya / ComfyUI's marker)                 -> v
  2. safetensors metadata `modelspec.prediction_type` ("v" / "epsilon")    -> that
  3. an A1111 config beside the file, `<stem>.yaml`, `parameterization: v` -> v (any other value: epsilon)
  4. an SD2.x file whose name contains "768" (SD2's 768 models are v-models) -> v
  5. otherwise epsilon (for SD2.x the note says to set model.prediction = "v" for a 768 v-model).
Zero terminal SNR (`decide_zero_terminal_snr`): a `ztsnr` key in the file (NoobAI-XL v-pred's marker, which
ComfyUI reads too), or `train.zero_terminal_snr`. A diffusers folder says both in its scheduler config
(`prediction_type`, `rescale_betas_zero_snr`).

Trained as an epsilon model, a v-model gives grey or burnt images, and a zero-terminal-SNR model trained
on the usual schedule loses its darkest and brightest tones (Lin et al. 2024, "Common Diffusion Noise
Schedules and Sample Steps are Flawed"): hence a decision read from the file, and said before the run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container
from pathlib import Path
from typing import Any

from lora_studio.core import model_files


def decide_prediction(keys: Container[str], path: Path, kind: str, requested: str = "auto",
                      metadata: dict[str, str] | None = None) -> tuple[str, str]:
    """(prediction, why) for a single file with these tensor names, by the rules in this module's docstring."""
    marked = "v_pred" in keys
    if requested in ("epsilon", "v"):
        why = "from model.prediction"
        if marked and requested == "epsilon":
            why += "; note the file carries a v_pred marker"
        return requested, why
    if marked:
        return "v", "the file has a v_pred key"
    spec = (metadata or {}).get("modelspec.prediction_type", "").strip().lower()
    if spec in ("v", "v_prediction", "epsilon"):
        return ("v" if spec.startswith("v") else "epsilon"), f"the file's modelspec.prediction_type is {spec}"
    yaml = Path(path).with_suffix(".yaml")
    if yaml.is_file():
        m = re.search(r"^\s*parameterization:\s*[\"']?(\w+)", yaml.read_text(errors="replace"), re.M)
        value = m.group(1) if m else "eps"
        return ("v" if value == "v" else "epsilon"), f"{yaml.name} says parameterization: {value}"
    if kind == "sd2" and "768" in Path(path).name:
        return "v", 'an SD2.x file with "768" in its name (SD2 768 models predict v)'
    if kind == "sd2":
        return "epsilon", ('an SD2.x file without a v marker or "768" in its name is taken as a 512 epsilon model; '
                           'set model.prediction = "v" for a 768 v-model')
    return "epsilon", "no v-prediction marker in the file"


def decide_zero_terminal_snr(keys: Container[str], requested: bool = False) -> tuple[bool, str]:
    """(zero terminal SNR, why): the file's `ztsnr` key turns it on whatever the setting says (a model
    trained with it gives grey images trained without); train.zero_terminal_snr turns it on for any file."""
    if "ztsnr" in keys:
        return True, "the file has a ztsnr key"
    if requested:
        return True, "from train.zero_terminal_snr"
    return False, ""


def _scheduler_config(folder: Path) -> dict[str, Any]:
    cfg_file = Path(folder) / "scheduler" / "scheduler_config.json"
    try:
        return json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    except (OSError, ValueError):
        return {}  # loading the folder says what is wrong with it


def decide_folder(folder: Path, requested: str = "auto", zero_terminal_snr: bool = False) -> tuple[str, str, bool, str]:
    """(prediction, why, zero terminal SNR, why) for a diffusers folder, from its scheduler config."""
    sched = _scheduler_config(folder)
    if requested in ("epsilon", "v"):
        prediction, why = requested, "from model.prediction"
    else:
        prediction = "v" if sched.get("prediction_type") == "v_prediction" else "epsilon"
        why = "from the scheduler config"
    if sched.get("rescale_betas_zero_snr"):
        return prediction, why, True, "from the scheduler config"
    return prediction, why, zero_terminal_snr, "from train.zero_terminal_snr" if zero_terminal_snr else ""


def prediction_note(prediction: str, why: str, ztsnr: bool = False, ztsnr_why: str = "") -> str:
    """The status line that says how the model is trained: "v-prediction with zero terminal SNR, read from
    the file's v_pred and ztsnr keys", "epsilon prediction (no v-prediction marker in the file)"."""
    if not ztsnr:
        return f"{prediction} prediction ({why})"
    words = "v-prediction" if prediction == "v" else "epsilon prediction"
    if why == "the file has a v_pred key" and ztsnr_why == "the file has a ztsnr key":
        return f"{words} with zero terminal SNR, read from the file's v_pred and ztsnr keys"
    return f"{words} ({why}) with zero terminal SNR ({ztsnr_why})"


def note_for(cfg: Any) -> str | None:
    """The prediction note a run of this config will report, read from the base model's files before it
    starts; None when only loading can tell (no model, a .ckpt, an unreadable or missing file)."""
    if not cfg.model.base:
        return None
    path = Path(cfg.model.base).expanduser()
    requested, ztsnr = cfg.model.prediction, cfg.train.zero_terminal_snr
    if path.is_dir():
        if not (path / "model_index.json").exists():
            return None
        return prediction_note(*decide_folder(path, requested, ztsnr))
    if path.suffix.lower() != ".safetensors" or model_files.is_lora_file(path):
        return None
    keys = model_files.safetensors_header(path)
    if not keys:
        return None
    pred, why = decide_prediction(keys, path, model_files.guess_kind(cfg), requested, model_files.safetensors_metadata(path))
    return prediction_note(pred, why, *decide_zero_terminal_snr(keys, ztsnr))
