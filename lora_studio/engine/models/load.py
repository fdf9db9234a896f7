"""Load a base model (a diffusers folder or a single LDM checkpoint file) with zero network access.

`load_models` returns every component the trainer needs plus what it decided (architecture, prediction)
and why, in `Models.notes` (the run reports them as a status event). A folder and a file of the same
model give the same `Models`.

Architecture configs: a folder carries its own. A single file carries none, so it is built from the
shipped config of its kind (`resources/models/<kind>`), unless a config folder is given: the
`config_dir` argument, or a `<file stem>.config/` folder next to the file (how tests and the demo
project point a tiny single-file model at its tiny configs; see `ldm_convert.save_single_file`).
That folder may also bring the model's own tokenizers (`tokenizer/`, `tokenizer_2/`), as a diffusers
folder does; every tokenizer is checked against its text encoder when the model loads (tokenizers.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lora_studio.core.config import ModelConfig
from lora_studio.core.errors import UserError
from lora_studio.core.model_kinds import LABELS, shipped_config
from lora_studio.core.prediction import decide_folder, prediction_note
from lora_studio.engine.models import single_file
from lora_studio.engine.models.tokenizers import check_vocabularies, tokenizers_for

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


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
    source: str = "folder"  # folder | file
    config_dir: Path | None = None  # where the architecture configs came from
    # Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"):
    # the rescaled schedule reaches pure noise at the last timestep; trained and sampled as such.
    zero_terminal_snr: bool = False


def detect_folder_kind(path: Path) -> str:
    index = json.loads((path / "model_index.json").read_text())
    if "text_encoder_2" in index and index.get("text_encoder_2", [None])[0]:
        return "sdxl"
    unet_cfg = json.loads((path / "unet" / "config.json").read_text())
    # SD2 uses linear projections in its transformers and a 1024-wide OpenCLIP text encoder.
    if unet_cfg.get("use_linear_projection") or unet_cfg.get("cross_attention_dim") == 1024:
        return "sd2"
    return "sd1"


def scheduler_config_for(config_dir: Path, prediction: str, zero_terminal_snr: bool = False) -> dict[str, Any]:
    """The training scheduler settings of a config folder, with the prediction (and zero terminal SNR)
    decided for this run."""
    sched_file = config_dir / "scheduler" / "scheduler_config.json"
    cfg = json.loads(sched_file.read_text()) if sched_file.exists() else {}
    cfg["prediction_type"] = "v_prediction" if prediction == "v" else "epsilon"
    if zero_terminal_snr:
        cfg["rescale_betas_zero_snr"] = True
    return cfg


def _check_kind(cfg: ModelConfig, found: str, what: str) -> str:
    if cfg.kind not in ("auto", found):
        raise UserError(
            f"model.kind is {cfg.kind}, but {what} holds an {LABELS[found]} model.",
            hint='Set model.kind = "auto" (or to the right kind) and start again.',
            code="wrong_model_kind",
        )
    return found


def _freeze(models: Models) -> Models:
    for m in (models.unet, models.vae, *models.text_encoders):
        m.requires_grad_(False)
        m.eval()
    return models


def _load_folder(path: Path, cfg: ModelConfig, dtype: torch.dtype, zero_terminal_snr: bool = False) -> Models:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    kind = _check_kind(cfg, detect_folder_kind(path), f"the folder {path.name}")
    prediction, how, ztsnr, ztsnr_why = decide_folder(path, cfg.prediction, zero_terminal_snr)
    notes = [f"{LABELS[kind]} diffusers folder {path.name}", prediction_note(prediction, how, ztsnr, ztsnr_why)]

    kw = dict(local_files_only=True)
    unet = _part(path, "unet", lambda: UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **kw))
    vae = _part(path, "vae", lambda: AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32, **kw))
    text_encoders = [_part(path, "text_encoder", lambda: CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype, **kw))]
    if kind == "sdxl":
        text_encoders.append(_part(path, "text_encoder_2", lambda: CLIPTextModelWithProjection.from_pretrained(
            path, subfolder="text_encoder_2", torch_dtype=dtype, **kw)))
    tokenizers = tokenizers_for(path, kind, path.name)
    check_vocabularies(tokenizers, text_encoders, path.name, path.name)
    tokenizers = [t.tokenizer for t in tokenizers]
    sched = scheduler_config_for(path, prediction, ztsnr)
    return Models(kind, prediction, unet, vae, text_encoders, tokenizers, sched, path.name, notes, "folder", path, ztsnr)


def _part(folder: Path, sub: str, load):
    """One component of a diffusers folder. diffusers and transformers report a missing or damaged weights
    file as an OSError, a ValueError or safetensors' own error; the artist needs to hear which part is broken."""
    from safetensors import SafetensorError

    try:
        return load()
    except (OSError, ValueError, SafetensorError) as e:
        files = sorted(p.name for p in (folder / sub).glob("*")) if (folder / sub).is_dir() else []
        have = f"it holds {', '.join(files)}" if files else "it is missing or empty"
        raise UserError(
            f"The {sub} of the model folder {folder.name} cannot be loaded ({have}): {str(e).splitlines()[0][:200]}",
            hint=f"Copy or download the model again; {sub}/ needs its config.json and weights "
                 f"(*.safetensors), complete. Or point model.base at a single .safetensors checkpoint.",
            code="bad_model",
        ) from None


def _existing(value: str, what: str, hint: str) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise UserError(f"{what} {path} does not exist.", hint=hint, code="model_not_found")
    return path


def _load_vae_override(models: Models, cfg: ModelConfig) -> None:
    """model.vae: a replacement VAE (diffusers folder or single file), e.g. a fixed SDXL fp16 VAE."""
    from diffusers import AutoencoderKL

    path = _existing(cfg.vae, "The VAE", "Set model.vae to a VAE .safetensors file or folder, or leave it empty to use the base model's VAE.")
    if path.is_dir():
        sub = "vae" if (path / "vae" / "config.json").exists() else None
        vae = AutoencoderKL.from_pretrained(path, subfolder=sub, torch_dtype=torch.float32, local_files_only=True)
    else:
        state = single_file.read_state_dict(path)
        vae = single_file.load_vae(state, models.config_dir or shipped_config(models.kind), path.name)
    models.vae = vae.requires_grad_(False).eval()
    models.notes.append(f"VAE replaced by {path.name} (model.vae)")


def _own_config_name(path: Path, config_dir: Path) -> str:
    """The folder where a single file's own configs and tokenizers go: the one it was loaded with, or
    the `<stem>.config/` sidecar it would need when it was built from the shipped configs."""
    shipped = config_dir.resolve().parent == shipped_config("sd1").resolve().parent
    return single_file.sidecar_config(path).name if shipped else config_dir.name


def load_models(cfg: ModelConfig, dtype: torch.dtype = torch.float32, *, config_dir: str | Path | None = None,
                zero_terminal_snr: bool = False) -> Models:
    """Every component of the base model on the CPU, frozen, in eval mode, in `dtype` (the VAE stays fp32).

    `zero_terminal_snr` is train.zero_terminal_snr: on, or the model says so (a `ztsnr` key, a scheduler
    config with `rescale_betas_zero_snr`), and the schedule is rescaled to reach zero SNR.

    `config_dir` (single files only) overrides the architecture config folder; without it a
    `<stem>.config/` folder next to the file is used, else the shipped config of the detected kind.
    """
    path = _existing(cfg.base, "The base model", "Set model.base to a diffusers model folder or a .safetensors checkpoint.")
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise UserError(
                f"The base model {path} is not a diffusers model folder (no model_index.json).",
                hint="Point model.base at a folder with model_index.json, unet/, vae/ and text_encoder/, or at a .safetensors checkpoint.",
                code="bad_model",
            )
        models = _load_folder(path, cfg, dtype, zero_terminal_snr)
    else:
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise UserError(
                f"The base model {path.name} is not a checkpoint file LoRA Studio can read.",
                hint="Point model.base at a .safetensors checkpoint (or a diffusers model folder).",
                code="bad_model",
            )
        loaded = single_file.load_single_file(
            path, kind=cfg.kind, prediction=cfg.prediction, dtype=dtype,
            config_dir=Path(config_dir) if config_dir else None, zero_terminal_snr=zero_terminal_snr,
        )
        kind = loaded.kind
        # A sidecar config folder may bring the model's own tokenizers; the shipped configs never do.
        own = tokenizers_for(loaded.config_dir, kind, path.name)
        loaded.notes += [f"tokenizer: {t.folder.parent.name}/{t.folder.name} (the model's own)" for t in own if t.folder]
        check_vocabularies(own, loaded.text_encoders, path.name, _own_config_name(path, loaded.config_dir))
        tokenizers = [t.tokenizer for t in own]
        sched = scheduler_config_for(loaded.config_dir, loaded.prediction, loaded.zero_terminal_snr)
        models = Models(
            kind, loaded.prediction, loaded.unet, loaded.vae, loaded.text_encoders, tokenizers, sched,
            path.name, loaded.notes, "file", loaded.config_dir, loaded.zero_terminal_snr,
        )
    if cfg.vae.strip():
        _load_vae_override(models, cfg)
    return _freeze(models)
