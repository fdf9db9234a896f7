"""diffusers → LDM ("original Stable Diffusion") single-file converter.

The LDM key layout is what A1111 / Forge / ComfyUI model folders hold and what our single-file loader
reads. The mapping is derived from each model's config (layers per block, which blocks have attention),
so it serves the full-size SD1 / SD2 / SDXL models and the tiny test models alike.

Every diffusers key must be placed: an unmapped key raises instead of being dropped, because a file
missing a tensor loads as random weights in the UIs (they load non-strictly).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# Where each text encoder lives in an LDM file: (prefix, format).
TEXT_ENCODER_PREFIXES = {
    "sd1": [("cond_stage_model.transformer.", "clip")],
    "sd2": [("cond_stage_model.model.", "openclip")],
    "sdxl": [("conditioner.embedders.0.transformer.", "clip"), ("conditioner.embedders.1.model.", "openclip")],
}

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _cfg(model_or_cfg: Any) -> dict:
    cfg = getattr(model_or_cfg, "config", model_or_cfg)
    return dict(cfg)


def _unet_module_map(cfg: dict) -> dict[str, str]:
    """diffusers module path → LDM module path for every block of a UNet2DConditionModel."""
    m = dict(_UNET_TOP)
    n_blocks = len(cfg["block_out_channels"])
    lpb = cfg["layers_per_block"]
    lpb = lpb if isinstance(lpb, int) else lpb[0]
    # input_blocks: 0 is conv_in; each down block has lpb (resnet[, attention]) entries then a downsampler.
    idx = 1
    for i in range(n_blocks):
        for j in range(lpb):
            m[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{idx}.0"
            m[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{idx}.1"
            idx += 1
        if i < n_blocks - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{idx}.0.op"
            idx += 1
    m["mid_block.resnets.0"] = "middle_block.0"
    m["mid_block.attentions.0"] = "middle_block.1"
    m["mid_block.resnets.1"] = "middle_block.2"
    # output_blocks: each up block has lpb + 1 entries; the last one also holds the upsampler, after the
    # attention when the block has one (index 2) or right after the resnet (index 1).
    idx = 0
    for i, block_type in enumerate(cfg["up_block_types"]):
        has_attn = "CrossAttn" in block_type
        for j in range(lpb + 1):
            m[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{idx}.0"
            m[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{idx}.1"
            if j == lpb and i < n_blocks - 1:
                m[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{idx}.{2 if has_attn else 1}.conv"
            idx += 1
    return m


def _map_prefix(key: str, module_map: dict[str, str]) -> tuple[str, str, str] | None:
    # The longest diffusers module path that prefixes the key wins ("down_blocks.0.resnets.0" vs ".attentions.0").
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in module_map:
            return module_map[head], ".".join(parts[cut:]), head
    return None


def unet_to_ldm(state: dict[str, torch.Tensor], config: Any, prefix: str = UNET_PREFIX) -> dict[str, torch.Tensor]:
    module_map = _unet_module_map(_cfg(config))
    out = {}
    for key, value in state.items():
        hit = _map_prefix(key, module_map)
        if hit is None:
            raise KeyError(f"UNet key {key} has no LDM equivalent")
        ldm_module, rest, head = hit
        if ".resnets." in head or head.startswith("mid_block.resnets"):
            name, _, param = rest.rpartition(".")
            rest = f"{_RESNET.get(name, name)}.{param}"
        out[f"{prefix}{ldm_module}.{rest}"] = value
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
             "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}


def _vae_module_map(n_blocks: int) -> dict[str, str]:
    m = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
    for side in ("encoder", "decoder"):
        m[f"{side}.mid_block.resnets.0"] = f"{side}.mid.block_1"
        m[f"{side}.mid_block.resnets.1"] = f"{side}.mid.block_2"
        m[f"{side}.mid_block.attentions.0"] = f"{side}.mid.attn_1"
    for i in range(n_blocks):
        m[f"encoder.down_blocks.{i}.resnets"] = f"encoder.down.{i}.block"
        m[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
        # LDM numbers the decoder's blocks from the lowest resolution up: diffusers' up_blocks.0 is up.N-1.
        m[f"decoder.up_blocks.{i}.resnets"] = f"decoder.up.{n_blocks - 1 - i}.block"
        m[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{n_blocks - 1 - i}.upsample"
    return m


def vae_to_ldm(state: dict[str, torch.Tensor], config: Any = None, prefix: str = VAE_PREFIX) -> dict[str, torch.Tensor]:
    n_blocks = len(_cfg(config)["block_out_channels"]) if config is not None else \
        1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down_blocks."))
    module_map = _vae_module_map(n_blocks)
    out = {}
    for key, value in state.items():
        hit = _map_prefix(key, module_map)
        if hit is None:
            if key.split(".")[0] in ("quant_conv", "post_quant_conv") or key.split(".")[1] in ("conv_in", "conv_out"):
                out[prefix + key] = value
                continue
            raise KeyError(f"VAE key {key} has no LDM equivalent")
        ldm_module, rest, head = hit
        if head.endswith("attentions.0"):
            name, _, param = rest.rpartition(".")
            rest = f"{_VAE_ATTN[name]}.{param}"
            if param == "weight" and value.ndim == 2:
                value = value[:, :, None, None]  # LDM's attention uses 1x1 convolutions
        elif "resnets" in head or ".mid.block_" in ldm_module:
            rest = rest.replace("conv_shortcut", "nin_shortcut")
        out[f"{prefix}{ldm_module}.{rest}"] = value
    return out


def canonical_text_encoder_state(model: Any) -> dict[str, torch.Tensor]:
    """A text encoder's state dict with the canonical `text_model.` nesting, whatever transformers did.

    transformers >= 5.6 keeps CLIPTextModel's modules at the top level (`encoder.layers.0…`) while
    CLIPTextModelWithProjection nests them under `text_model.`; files always use the nested names.
    """
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("position_ids"):
            continue  # a buffer, not a weight; LDM files from recent tools omit it
        if not (key.startswith("text_model.") or key.startswith("text_projection.")):
            key = "text_model." + key
        out[key] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    # The HF CLIP layout is kept as it is under the LDM prefix (LDM wraps a transformers CLIPTextModel).
    return {prefix + k: v for k, v in state.items() if not k.startswith("text_projection.")}


_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def openclip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    out = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight",
           "text_model.final_layer_norm.bias": "ln_final.bias"}
    for key, value in state.items():
        if key in top:
            out[prefix + top[key]] = value
        elif key == "text_projection.weight":
            # HF stores a Linear weight [proj, width]; OpenCLIP multiplies x @ text_projection [width, proj].
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key.startswith("text_model.encoder.layers."):
            n, rest = key[len("text_model.encoder.layers."):].split(".", 1)
            module, _, param = rest.rpartition(".")
            base = f"{prefix}transformer.resblocks.{n}."
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault(f"{base}attn.in_proj_{param}", {})[module[-6]] = value
            elif module in _OPENCLIP_LAYER:
                out[f"{base}{_OPENCLIP_LAYER[module]}.{param}"] = value
            else:
                raise KeyError(f"text encoder key {key} has no OpenCLIP equivalent")
        else:
            raise KeyError(f"text encoder key {key} has no OpenCLIP equivalent")
    for key, qkv in fused.items():
        # OpenCLIP's nn.MultiheadAttention fuses q, k, v into one in_proj, in that order.
        out[key] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


def to_ldm_state_dict(parts: dict[str, Any], kind: str, *, v_pred: bool = False, ztsnr: bool = False) -> dict[str, torch.Tensor]:
    """The LDM state dict of a pipeline's components (`tiny.build(...)` or a loaded pipeline's `.components`)."""
    if kind not in TEXT_ENCODER_PREFIXES:
        raise ValueError(f"kind must be one of {tuple(TEXT_ENCODER_PREFIXES)}")
    out = unet_to_ldm(parts["unet"].state_dict(), parts["unet"].config)
    out.update(vae_to_ldm(parts["vae"].state_dict(), parts["vae"].config))
    encoders = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if kind == "sdxl" else [])
    for encoder, (prefix, fmt) in zip(encoders, TEXT_ENCODER_PREFIXES[kind]):
        state = canonical_text_encoder_state(encoder)
        out.update(clip_to_ldm(state, prefix) if fmt == "clip" else openclip_to_ldm(state, prefix))
    if v_pred:
        out["v_pred"] = torch.tensor([])  # ComfyUI / kohya's marker for v-prediction checkpoints
    if ztsnr:
        out["ztsnr"] = torch.tensor([])  # NoobAI-XL v-pred's marker for zero terminal SNR (ComfyUI reads it)
    return out


def write_config_folder(parts: dict[str, Any], kind: str, folder: str | Path) -> Path:
    """The components' diffusers configs (no weights) as a folder the single-file loader can use."""
    folder = Path(folder)
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if kind == "sdxl" else [])
    index: dict[str, Any] = {"_class_name": "StableDiffusionXLPipeline" if kind == "sdxl" else "StableDiffusionPipeline"}
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
        part = parts[name]
        if hasattr(part, "save_config"):
            part.save_config(folder / name)
        else:
            part.config.to_json_file(str(folder / name / "config.json"))
        index[name] = [type(part).__module__.split(".")[0], type(part).__name__]
    if "scheduler" in parts:
        parts["scheduler"].save_config(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def save_single_file(
    parts: dict[str, Any],
    kind: str,
    path: str | Path,
    *,
    v_pred: bool = False,
    ztsnr: bool = False,
    dtype: torch.dtype | None = None,
    config_sidecar: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the components as one LDM-layout .safetensors file and return its path.

    `metadata` defaults to `modelspec.prediction_type` (pass {} for none).
    `config_sidecar` also writes the components' configs to `<stem>.config/` beside the file, which the
    loader uses instead of the shipped full-size configs (needed for the tiny models).
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = to_ldm_state_dict(parts, kind, v_pred=v_pred, ztsnr=ztsnr)
    seen: set[int] = set()
    for key, value in state.items():
        value = value.detach().to("cpu", dtype if (dtype and value.is_floating_point()) else value.dtype)
        # safetensors refuses tensors that share memory: copy any storage seen before.
        ptr = value.untyped_storage().data_ptr()
        state[key] = value.clone() if ptr in seen and value.numel() else value.contiguous()
        seen.add(ptr)
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata is None:
        metadata = {"modelspec.prediction_type": "v" if v_pred else "epsilon"}
    save_file(state, str(path), metadata=metadata or None)
    if config_sidecar:
        write_config_folder(parts, kind, path.with_name(path.stem + ".config"))
    return path
