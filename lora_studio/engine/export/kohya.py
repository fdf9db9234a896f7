"""The kohya LoRA format every Stable Diffusion UI reads: key names, header metadata and hashes.

See shared/design/export-contract.md. Names are the diffusers module path with `.` replaced by `_`
behind a prefix; A1111, Forge/ComfyUI, InvokeAI and diffusers all place `lora_unet_down_blocks_…`
names, and diffusers' `lora_state_dict` only treats a file as kohya when EVERY key starts with one of
`PREFIXES` (otherwise `load_lora_weights` raises on the leftover keys).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

from lora_studio.core import safetensors_file
from lora_studio.core.model_kinds import KINDS

PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")

# CLIPTextModel's own children. transformers >= 5.6 keeps them at the top level (`encoder.layers.0…`);
# every loader (and every older file) expects the `text_model.` path, so names are built from that.
_CLIP_TOP = ("embeddings", "encoder", "final_layer_norm")

# Identifiers in the diffusers UNet / CLIP (and kohya's LDM UNet) that contain `_`. A kohya name has lost
# the dots, so the reverse mapping rejoins these, longest first (as diffusers' own converter does by
# pattern). Only used to show names; verification looks names up in the base model instead.
_COMPOUNDS = sorted(
    (
        tuple(c.split("_"))
        for c in (
            "down_blocks up_blocks mid_block transformer_blocks to_q to_k to_v to_out proj_in proj_out "
            "time_emb_proj conv_shortcut conv_in conv_out conv_norm_out time_embedding linear_1 linear_2 "
            "add_embedding class_embedding encoder_hid_proj "
            "text_model self_attn q_proj k_proj v_proj out_proj final_layer_norm layer_norm1 layer_norm2 "
            "token_embedding position_embedding text_projection "
            "input_blocks output_blocks middle_block in_layers out_layers emb_layers skip_connection "
            "time_embed label_emb"
        ).split()
    ),
    key=len,
    reverse=True,
)


def canonical_te_path(path: str) -> str:
    """A text-encoder module path in the layout every loader expects (`text_model.encoder.layers…`)."""
    return f"text_model.{path}" if path.split(".", 1)[0] in _CLIP_TOP else path


def kohya_name(part: str, module_path: str, model_kind: str) -> str:
    """`unet` / `te1` / `te2` + a module path -> the kohya module name (no `.lora_down.weight` suffix)."""
    if model_kind not in KINDS:
        raise ValueError(f"model_kind must be one of {KINDS}, not {model_kind!r}")
    if part == "unet":
        prefix = "lora_unet_"
    elif part == "te1":
        # InvokeAI applies SD1/SD2 text-encoder patches by `lora_te_`; SDXL files use te1/te2 (kohya's sdxl
        # network), and diffusers maps both `lora_te_` and `lora_te1_` to the first encoder.
        prefix = "lora_te1_" if model_kind == "sdxl" else "lora_te_"
        module_path = canonical_te_path(module_path)
    elif part == "te2":
        if model_kind != "sdxl":
            raise ValueError(f"a {model_kind} model has one text encoder; te2 is SDXL's second")
        prefix = "lora_te2_"
        module_path = canonical_te_path(module_path)
    else:
        raise ValueError(f"part must be unet, te1 or te2, not {part!r}")
    return prefix + module_path.replace(".", "_")


def parse_kohya_name(name: str) -> tuple[str, str]:
    """The reverse of `kohya_name`: (`unet`|`te1`|`te2`, dotted module path). Accepts a full key too.

    `lora_te_` parses to `te1` (the only / first text encoder).
    """
    name = name.split(".", 1)[0]
    for prefix, part in (("lora_unet_", "unet"), ("lora_te1_", "te1"), ("lora_te2_", "te2"), ("lora_te_", "te1")):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            break
    else:
        raise ValueError(f"{name!r} is not a kohya LoRA name (it must start with one of {', '.join(PREFIXES)})")
    tokens = rest.split("_")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for compound in _COMPOUNDS:
            if tuple(tokens[i:i + len(compound)]) == compound:
                out.append("_".join(compound))
                i += len(compound)
                break
        else:
            out.append(tokens[i])
            i += 1
    return part, ".".join(out)


# --- metadata ------------------------------------------------------------------------------------

def base_model_version(kind: str, prediction: str) -> str:
    if kind == "sdxl":
        return "sdxl_base_v1-0"
    if kind == "sd2":
        return "sd_v2_v" if prediction == "v" else "sd_v2"
    return "sd_v1"


def architecture(kind: str, prediction: str) -> str:
    # Forge files a LoRA under SD1 / SDXL by this; the ids are Stability's ModelSpec ones (as kohya writes).
    if kind == "sdxl":
        return "stable-diffusion-xl-v1-base/lora"
    if kind == "sd2":
        return "stable-diffusion-v2-768-v/lora" if prediction == "v" else "stable-diffusion-v2-512/lora"
    return "stable-diffusion-v1/lora"


def kind_from_metadata(metadata: dict[str, str]) -> str | None:
    arch = metadata.get("modelspec.architecture", "")
    version = metadata.get("ss_base_model_version", "")
    if arch.startswith("stable-diffusion-xl") or version.startswith("sdxl"):
        return "sdxl"
    if arch.startswith("stable-diffusion-v2") or version.startswith("sd_v2") or metadata.get("ss_v2") == "True":
        return "sd2"
    if arch.startswith("stable-diffusion-v1") or version.startswith("sd_v1"):
        return "sd1"
    return None


REQUIRED_KEYS = (
    "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_base_model_version", "ss_v2",
    "ss_output_name", "ss_sd_model_name", "ss_resolution", "ss_clip_skip", "ss_num_train_images",
    "ss_num_epochs", "ss_steps", "ss_epoch", "ss_learning_rate", "ss_unet_lr", "ss_text_encoder_lr",
    "ss_optimizer", "ss_seed", "ss_mixed_precision", "ss_training_started_at", "ss_training_finished_at",
    "ss_tag_frequency", "ss_dataset_dirs", "ss_bucket_info",
    "sshs_model_hash", "sshs_legacy_hash",
    "modelspec.sai_model_spec", "modelspec.architecture", "modelspec.implementation", "modelspec.title",
    "modelspec.resolution", "modelspec.date", "modelspec.prediction_type",
)


def _by_basename(per_dir: dict[str, Any]) -> dict[str, Any]:
    # kohya keys these by the folder's base name (os.path.basename(subset.image_dir)): a shared LoRA should
    # not carry the artist's home-folder path. Same-named folders get " (2)", as kohya does.
    out: dict[str, Any] = {}
    for d, value in per_dir.items():
        base = os.path.basename(os.path.normpath(str(d))) or str(d)
        key, i = base, 2
        while key in out:
            key, i = f"{base} ({i})", i + 1
        out[key] = value
    return out


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value if value is not None else {})


def network_rank_alpha(state: dict, cfg) -> tuple[int, float]:
    """The rank and alpha the LoRA was trained with: the checkpoint's record, else the config."""
    return int(state.get("rank", cfg.network.rank)), float(state.get("alpha", cfg.network.alpha))


def build_metadata(state: dict, cfg, *, finished_at: float, title: str | None = None) -> dict[str, str]:
    """Every header key the contract lists (kohya's `ss_*` and ModelSpec's), all values strings.

    Hashes (`sshs_*`) are added by the writer, computed from the tensors as kohya does.
    """
    kind, prediction = state["model_kind"], state.get("prediction", "epsilon")
    rank, alpha = network_rank_alpha(state, cfg)
    res = int(state.get("resolution", cfg.train.resolution))
    base = state.get("base_name") or os.path.basename(os.path.normpath(str(state.get("base_model", cfg.model.base))))
    lr = state.get("learning_rate", cfg.train.learning_rate)
    md: dict[str, Any] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": rank,
        "ss_network_alpha": alpha,
        "ss_network_dropout": cfg.network.dropout,
        "ss_base_model_version": base_model_version(kind, prediction),
        "ss_v2": kind == "sd2",
        "ss_output_name": cfg.output.name,
        "ss_sd_model_name": base,
        # kohya writes str(args.resolution), a (width, height) tuple.
        "ss_resolution": (res, res),
        "ss_clip_skip": state.get("clip_skip", cfg.model.clip_skip),
        "ss_num_train_images": state.get("num_train_images", 0),
        # Regularisation pictures (dataset.regularization): kohya writes both keys, 0 and {} without any.
        "ss_num_reg_images": state.get("num_reg_images", 0),
        "ss_num_epochs": state.get("num_epochs", 0),
        "ss_max_train_steps": state.get("max_steps", cfg.train.max_steps),
        "ss_batch_size_per_device": state.get("batch_size", cfg.train.batch_size),
        "ss_steps": state["step"],
        "ss_epoch": state.get("epoch", 0),
        "ss_learning_rate": lr,
        "ss_unet_lr": lr,
        "ss_text_encoder_lr": state.get("text_encoder_lr", cfg.network.text_encoder_lr),
        "ss_optimizer": state.get("optimizer", cfg.train.optimizer),
        "ss_seed": state.get("seed", cfg.train.seed),
        "ss_mixed_precision": state.get("mixed_precision", cfg.train.mixed_precision),
        # kohya's key: the schedule was rescaled to zero terminal SNR (sample with trailing timesteps).
        "ss_zero_terminal_snr": bool(state.get("zero_terminal_snr", False)),
        "ss_training_started_at": state.get("training_started_at", finished_at),
        "ss_training_finished_at": finished_at,
        "ss_tag_frequency": _json(_by_basename(state.get("tag_frequency") or {})),
        "ss_dataset_dirs": _json(_by_basename(state.get("dataset_dirs") or {})),
        "ss_reg_dataset_dirs": _json(_by_basename(state.get("reg_dataset_dirs") or {})),
        "ss_bucket_info": _json(state.get("bucket_info") or {}),
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": architecture(kind, prediction),
        # kohya: the SGM reference implementation for SDXL LoRAs, diffusers for SD1/SD2.
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if kind == "sdxl" else "diffusers",
        "modelspec.title": title or cfg.output.name,
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.date": datetime.fromtimestamp(int(finished_at), tz=timezone.utc).isoformat(),
        "modelspec.prediction_type": "v" if prediction == "v" else "epsilon",
    }
    for key, value in (("trigger_phrase", cfg.output.trigger), ("author", cfg.output.author), ("description", cfg.output.description)):
        if value and value.strip():
            md[f"modelspec.{key}"] = value.strip()
    return {k: str(v) for k, v in md.items()}


# --- hashes (sd-webui-additional-networks; kohya precomputes them so A1111 need not) ----------------

def _hash_data(b: BytesIO) -> str:
    # addnet_hash_safetensors: sha256 of everything after the 8-byte header length and the header.
    h = hashlib.sha256()
    b.seek(0)
    n = int.from_bytes(b.read(8), "little")
    b.seek(n + 8)
    for chunk in iter(lambda: b.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _hash_legacy(b: BytesIO) -> str:
    # addnet_hash_legacy: the first 8 hex digits of sha256 over 0x10000 bytes at 0x100000 (A1111's old
    # model hash). A file under 1 MiB hashes the empty string, as A1111 does too.
    b.seek(0x100000)
    return hashlib.sha256(b.read(0x10000)).hexdigest()[:8]


def precalculate_hashes(tensors: dict, metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) exactly as kohya's `precalculate_safetensors_hashes`.

    Only the `ss_*` training metadata is serialised for hashing: the legacy hash depends on the header
    size, and user metadata (cover images, ModelSpec edits) must not change it.
    """
    import safetensors.torch

    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    b = BytesIO(safetensors.torch.save(tensors, ss_only))
    return _hash_data(b), _hash_legacy(b)


def model_hash(path: str | Path) -> str:
    """sshs_model_hash of a file: sha256 of its tensor data (everything after the header)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(n + 8)
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def legacy_hash(path: str | Path) -> str:
    """sshs_legacy_hash of a file, recomputed on a serialisation holding only its `ss_*` metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return precalculate_hashes(tensors, metadata)[1]


def read_header(path: str | Path) -> dict[str, Any]:
    """The raw safetensors header (JSON), its value types not trusted beyond what the layout check needs:
    a ValueError (core.safetensors_file.DamagedFile) for a file whose tensors do not fit in it."""
    return safetensors_file.read_header(path)
