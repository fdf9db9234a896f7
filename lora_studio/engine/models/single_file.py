"""Single-file base models (LDM key layout, as in A1111 / Forge / ComfyUI model folders).

Reading never unpickles: .safetensors is read as it is; a .ckpt/.pt/.bin only with
`torch.load(weights_only=True)`, and a file that needs more is refused (`unsafe_checkpoint`).

The architecture is detected from keys and shapes, never from the file name. The prediction type and
zero terminal SNR are core/prediction.py's decision, from the file's keys and metadata (the app makes the
same one, from the header alone, when the model is chosen).

UNet and VAE are loaded by diffusers' `from_single_file` with a local config folder; the text encoders
are built from the config and filled through diffusers' LDM→HF key converters, with the encoders told
apart by width (SDXL's CLIP-L and OpenCLIP-bigG) and every weight checked to be present.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lora_studio.core.errors import UserError
from lora_studio.core.model_kinds import ANY_LABEL, LABELS, shipped_config
from lora_studio.core.prediction import decide_prediction, decide_zero_terminal_snr, prediction_note

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
SD1_CLIP = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
SD2_OPENCLIP = "cond_stage_model.model.positional_embedding"
XL_CLIP = "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"
XL_OPENCLIP = "conditioner.embedders.1.model.positional_embedding"
REFINER_OPENCLIP = "conditioner.embedders.0.model.positional_embedding"


@dataclass
class Detected:
    kind: str  # sd1 | sd2 | sdxl
    widths: list[int]  # text encoder widths, in encoder order
    description: str  # what was found, for the notes


@dataclass
class Loaded:
    kind: str
    prediction: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    config_dir: Path
    notes: list[str] = field(default_factory=list)
    zero_terminal_snr: bool = False


def _unsupported(name: str, found: str, hint: str = "") -> UserError:
    return UserError(
        f"{name} is {found}, which LoRA Studio cannot train on.",
        hint=hint or f"Choose an {ANY_LABEL} base checkpoint (.safetensors).",
        code="unsupported_model",
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint file, without running any code from it."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # a truncated download, or not a safetensors file at all
            raise UserError(
                f"{path.name} cannot be read as a .safetensors file ({e}).",
                hint="Download the model again; the file may be incomplete or damaged.",
                code="bad_model",
            ) from e
    else:
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols it may not support
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            with open(path, "rb") as f:
                head = f.read(2)
            if not (head == b"PK" or head[:1] == b"\x80"):  # neither a torch zip nor a pickle: just damaged
                raise UserError(
                    f"{path.name} cannot be read as a PyTorch checkpoint (the file is damaged or not a model).",
                    hint="Download the model again, or use its .safetensors version.",
                    code="bad_model",
                ) from e
            # weights_only refuses any object but tensors and plain containers: the file wants to run code.
            raise UserError(
                f"{path.name} is a pickle checkpoint that needs more than plain tensors to load, so LoRA Studio will not open it.",
                hint="Convert it to .safetensors in your UI or with a trusted script, then point model.base at the .safetensors file.",
                code="unsafe_checkpoint",
            ) from e
        except Exception as e:
            raise UserError(
                f"{path.name} cannot be read as a PyTorch checkpoint ({e.__class__.__name__}).",
                hint="Download the model again, or use its .safetensors version.",
                code="bad_model",
            ) from e
        # Training checkpoints nest the weights under "state_dict" next to counters and optimizer state.
        while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise UserError(f"{path.name} holds no model weights.", hint="Use a model checkpoint file.", code="bad_model")
        state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return normalize_keys(state)


def read_metadata(path: Path) -> dict[str, str]:
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Early SD1 files saved the CLIP encoder without the `text_model.` level (older transformers).
    old = "cond_stage_model.transformer."
    if any(k.startswith(old) for k in state) and not any(k.startswith(old + "text_model.") for k in state):
        state = {(old + "text_model." + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    return state


def _foreign(state: dict[str, torch.Tensor]) -> str | None:
    keys = state.keys()
    if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_down." in k or ".lora_A." in k for k in keys):
        return "a LoRA, not a base model"
    if any("joint_blocks." in k for k in keys):
        return "a Stable Diffusion 3 model (MMDiT joint_blocks)"
    if any("double_blocks." in k for k in keys):
        return "a Flux model (double_blocks)"
    if "clip_txt_mapper.weight" in keys or any(".channelwise." in k for k in keys):
        return "a Stable Cascade model"
    if "edm_mean" in keys or "edm_vpred.sigma_max" in keys:
        return "an EDM-schedule model (Playground v2.5 / CosXL: edm_* keys)"
    return None


def _context_width(state: dict[str, torch.Tensor]) -> int | None:
    for k, v in state.items():
        if k.startswith("model.diffusion_model.") and k.endswith("attn2.to_k.weight"):
            return int(v.shape[1])
    return None


def detect(state: dict[str, torch.Tensor], name: str = "The file") -> Detected:
    """The architecture of an LDM-layout state dict, or a UserError naming what was found instead."""
    found = _foreign(state)
    if found:
        raise _unsupported(name, found)
    if UNET_IN not in state:
        if "encoder.conv_in.weight" in state and "decoder.conv_in.weight" in state:
            raise _unsupported(name, "a VAE only", "Set model.base to a full checkpoint; a VAE file goes in model.vae.")
        if "conv_in.weight" in state and any(k.startswith("down_blocks.") for k in state):
            raise _unsupported(name, "a diffusers-format UNet without text encoder or VAE",
                               "Point model.base at the whole diffusers model folder instead.")
        raise _unsupported(name, "not a Stable Diffusion checkpoint (no model.diffusion_model UNet weights)")
    in_ch = int(state[UNET_IN].shape[1])
    if in_ch != 4:
        what = {9: "an inpainting model (its UNet takes 9 input channels)",
                8: "an instruct-pix2pix model (its UNet takes 8 input channels)",
                7: "an upscaler model (its UNet takes 7 input channels)"}.get(in_ch, f"a UNet with {in_ch} input channels")
        raise _unsupported(name, what, "Choose the matching base (non-inpainting) checkpoint.")
    if REFINER_OPENCLIP in state and XL_OPENCLIP not in state:
        adm = state.get("model.diffusion_model.label_emb.0.0.weight")
        adm_w = f", {int(adm.shape[1])}-wide size conditioning" if adm is not None else ""
        width = int(state[REFINER_OPENCLIP].shape[1])
        raise _unsupported(name, f"an SDXL refiner (one OpenCLIP text encoder, {width} wide{adm_w})",
                           "Train on the SDXL base model; the refiner only polishes its images.")
    if XL_CLIP in state and XL_OPENCLIP in state:
        kind, widths = "sdxl", [int(state[XL_CLIP].shape[1]), int(state[XL_OPENCLIP].shape[1])]
        desc = f"CLIP-L ({widths[0]} wide, conditioner.embedders.0) and OpenCLIP ({widths[1]} wide, conditioner.embedders.1)"
    elif SD2_OPENCLIP in state:
        kind, widths = "sd2", [int(state[SD2_OPENCLIP].shape[1])]
        desc = f"OpenCLIP text encoder ({widths[0]} wide, cond_stage_model.model)"
    elif SD1_CLIP in state:
        kind, widths = "sd1", [int(state[SD1_CLIP].shape[1])]
        desc = f"CLIP text encoder ({widths[0]} wide, cond_stage_model.transformer)"
    elif any(k.startswith("conditioner.") for k in state):
        raise _unsupported(name, "an SDXL-like model with text encoders other than CLIP-L + OpenCLIP-bigG")
    else:
        raise _unsupported(name, "a UNet without text encoders (no cond_stage_model or conditioner keys)",
                           "Use a full checkpoint that includes the text encoder and VAE.")
    context = _context_width(state)
    if context is not None and context != sum(widths):
        raise _unsupported(name, f"a model whose UNet cross-attention is {context} wide but whose text encoders give {sum(widths)}")
    base = " base" if kind == "sdxl" else ""  # not the refiner, which detect refuses above
    return Detected(kind, widths, f"{LABELS[kind]}{base} single file: {desc}, cross-attention {context}")


class _Shape:
    """Stands in for a tensor where only its shape is needed (detection reads no weight data)."""

    def __init__(self, shape: list[int]):
        self.shape = torch.Size(shape)


def detect_file(path: Path) -> Detected:
    """`detect` for a .safetensors file from its header alone: fast even for a 7 GB SDXL checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: _Shape(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise UserError(f"{path.name} cannot be read as a .safetensors file ({e}).",
                        hint="Download the model again; the file may be incomplete or damaged.", code="bad_model") from e
    return detect(normalize_keys(shapes), path.name)  # type: ignore[arg-type]


def sidecar_config(path: Path) -> Path:
    """The optional architecture config folder beside a file: `model.safetensors` -> `model.config/`."""
    return path.with_name(path.stem + ".config")


def _config_error(name: str, part: str, config_dir: Path, e: Exception) -> UserError:
    return UserError(
        f"The {part} in {name} does not fit the architecture config {config_dir.name} ({str(e).splitlines()[0][:200]}).",
        hint=("Check model.kind and model.prediction; a model with a non-standard architecture needs its diffusers "
              'configs (unet/, vae/, text_encoder/ config.json) in a "<file name>.config" folder beside the file.'),
        code="model_config_mismatch",
    )


def _check_loaded(model: Any, name: str, part: str, config_dir: Path) -> Any:
    # from_single_file leaves weights it did not find on the meta device instead of failing: catch that here.
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise _config_error(name, part, config_dir, KeyError(f"{len(missing)} weights missing, e.g. {missing[0]}"))
    return model


@contextlib.contextmanager
def _quiet_diffusers():
    # from_single_file casts with `.to(dtype)`, which makes diffusers warn about an empty list of fp32
    # modules on every load; that warning says nothing about the artist's model.
    log = logging.getLogger("diffusers.models.modeling_utils")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


def load_unet(state: dict[str, torch.Tensor], config_dir: Path, dtype: torch.dtype, name: str = "the file"):
    from diffusers import UNet2DConditionModel

    try:
        with _quiet_diffusers():
            unet = UNet2DConditionModel.from_single_file(
                state, config=str(config_dir), subfolder="unet", local_files_only=True, torch_dtype=dtype
            )
    except (ValueError, RuntimeError, KeyError) as e:
        raise _config_error(name, "UNet", config_dir, e) from e
    return _check_loaded(unet, name, "UNet", config_dir)


def load_vae(state: dict[str, torch.Tensor], config_dir: Path, name: str = "the file"):
    from diffusers import AutoencoderKL

    try:
        # The VAE stays fp32: SDXL's VAE overflows in fp16.
        with _quiet_diffusers():
            vae = AutoencoderKL.from_single_file(
                state, config=str(config_dir), subfolder="vae", local_files_only=True, torch_dtype=torch.float32
            )
    except (ValueError, RuntimeError, KeyError) as e:
        raise _config_error(name, "VAE", config_dir, e) from e
    return _check_loaded(vae, name, "VAE", config_dir)


def fit_text_encoder_keys(model_keys: set[str], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename canonical `text_model.…` keys to the model's own layout (flat or nested, per transformers)."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue  # a buffer the model makes itself; some merged files carry broken float copies
        for candidate in (key, key.removeprefix("text_model."), "text_model." + key):
            if candidate in model_keys:
                out[candidate] = value
                break
    return out


def _text_encoder(cls, state: dict[str, torch.Tensor], fmt: str, prefix: str, config_dir: Path, sub: str,
                  width: int, dtype: torch.dtype, name: str):
    from accelerate import init_empty_weights
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig

    config = CLIPTextConfig.from_pretrained(str(config_dir), subfolder=sub, local_files_only=True)
    if config.hidden_size != width:
        # The guard against SDXL's classic bug: both encoders loaded from the same (first) weights.
        raise _config_error(name, f"text encoder {sub}", config_dir,
                            ValueError(f"the file's encoder is {width} wide, the config's {config.hidden_size}"))
    with init_empty_weights():  # buffers stay real, parameters wait for the file's tensors
        model = cls(config)
    if fmt == "clip":
        own = {k: v for k, v in state.items() if k.startswith(prefix)}
        converted = convert_ldm_clip_checkpoint(own)
    else:
        converted = convert_open_clip_checkpoint(model, state, prefix=prefix)
    model_state = model.state_dict()
    fitted = fit_text_encoder_keys(set(model_state), converted)
    missing = [k for k, p in model.named_parameters() if k not in fitted]
    if missing:
        raise _config_error(name, f"text encoder {sub}", config_dir, KeyError(f"missing {missing[0]}"))
    for k, v in fitted.items():
        if v.shape != model_state[k].shape:
            raise _config_error(name, f"text encoder {sub}", config_dir,
                                ValueError(f"{k} is {tuple(v.shape)} in the file, {tuple(model_state[k].shape)} in the config"))
        fitted[k] = v.to(dtype) if v.is_floating_point() else v
    model.load_state_dict(fitted, strict=False, assign=True)
    return model.eval()


def load_text_encoders(state: dict[str, torch.Tensor], detected: Detected, config_dir: Path, dtype: torch.dtype,
                       name: str = "the file") -> list[Any]:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if detected.kind == "sdxl":
        return [
            _text_encoder(CLIPTextModel, state, "clip", "conditioner.embedders.0.transformer.", config_dir,
                          "text_encoder", detected.widths[0], dtype, name),
            _text_encoder(CLIPTextModelWithProjection, state, "openclip", "conditioner.embedders.1.model.",
                          config_dir, "text_encoder_2", detected.widths[1], dtype, name),
        ]
    if detected.kind == "sd2":
        return [_text_encoder(CLIPTextModel, state, "openclip", "cond_stage_model.model.", config_dir,
                              "text_encoder", detected.widths[0], dtype, name)]
    return [_text_encoder(CLIPTextModel, state, "clip", "cond_stage_model.transformer.", config_dir,
                          "text_encoder", detected.widths[0], dtype, name)]


def load_single_file(path: Path, *, kind: str = "auto", prediction: str = "auto", dtype: torch.dtype = torch.float32,
                     config_dir: Path | None = None, zero_terminal_snr: bool = False) -> Loaded:
    """Detect, decide and load every component of a single-file checkpoint (CPU, eval mode)."""
    path = Path(path)
    state = read_state_dict(path)
    detected = detect(state, path.name)
    if kind not in ("auto", detected.kind):
        raise UserError(
            f"model.kind is {kind}, but {path.name} holds an {LABELS[detected.kind]} model.",
            hint='Set model.kind = "auto" (or to the right kind) and start again.',
            code="wrong_model_kind",
        )
    pred, why = decide_prediction(state, path, detected.kind, prediction, read_metadata(path))
    ztsnr, ztsnr_why = decide_zero_terminal_snr(state, zero_terminal_snr)
    notes = [detected.description, prediction_note(pred, why, ztsnr, ztsnr_why)]
    if config_dir is not None:
        cfg_dir, cfg_note = Path(config_dir), f"architecture config: {Path(config_dir).name} (given)"
    elif sidecar_config(path).is_dir():
        cfg_dir, cfg_note = sidecar_config(path), f"architecture config: {sidecar_config(path).name} beside the file"
    else:
        cfg_dir = shipped_config(detected.kind, pred)
        cfg_note = f"architecture config: shipped {cfg_dir.name}"
    notes.append(cfg_note)
    unet = load_unet(state, cfg_dir, dtype, path.name)
    vae = load_vae(state, cfg_dir, path.name)
    encoders = load_text_encoders(state, detected, cfg_dir, dtype, path.name)
    return Loaded(detected.kind, pred, unet, vae, encoders, cfg_dir, notes, ztsnr)
