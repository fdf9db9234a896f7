"""LoRA adapters on the UNet and text encoders (peft), and their weights under canonical names.

The weights travel between the trainer, checkpoints and the exporter as one flat dict:
`"<part>.<module path>.lora_A.weight"` ([rank, in]) / `".lora_B.weight"` ([out, rank]), part in
unet / te1 / te2. Text-encoder paths are always `text_model.encoder.layers.N…`: transformers ≥ 5.6 keeps
CLIPTextModel's modules at the top level (`encoder.layers.N…`) while CLIPTextModelWithProjection still
nests them under `text_model.`, and the exported names must not depend on the installed version.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

# attn1 (self-attention) and attn2 (cross-attention) projections. attn2.to_k / to_v must stay among the
# targets: InvokeAI detects the base model from their down-weight width.
UNET_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
UNET_FEED_FORWARD = ["ff.net.0.proj", "ff.net.2"]
TEXT_ENCODER = ["q_proj", "k_proj", "v_proj", "out_proj"]
TE_PARTS = ("te1", "te2")


def lora_config(rank: int, alpha: float, targets: list[str], dropout: float = 0.0) -> LoraConfig:
    # init_lora_weights=True: A Kaiming-uniform, B zero, so step 0 is exactly the base model.
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, init_lora_weights=True)


def unet_targets(targets: str) -> list[str]:
    return UNET_ATTENTION + (UNET_FEED_FORWARD if targets == "attention+ff" else [])


def add_lora(module: torch.nn.Module, config: LoraConfig) -> list[torch.nn.Parameter]:
    """Inject the adapter; return its parameters, which train in fp32 whatever the base dtype."""
    inject_adapter_in_model(config, module)
    params = [p for n, p in module.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def _canonical_te(name: str) -> str:
    return name if name.startswith("text_model.") else f"text_model.{name}"


def _installed_te(name: str, module: torch.nn.Module) -> str:
    has_nested = hasattr(module, "text_model")
    return name if has_nested else name.removeprefix("text_model.")


def lora_state(unet: torch.nn.Module, text_encoders: list[torch.nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """All LoRA weights as fp32 CPU tensors under canonical names (see the module docstring)."""
    out = {f"unet.{k}": v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(unet).items()}
    for part, te in zip(TE_PARTS, text_encoders or []):
        for k, v in get_peft_model_state_dict(te).items():
            out[f"{part}.{_canonical_te(k)}"] = v.detach().float().cpu().clone()
    return out


def load_lora_state(state: dict[str, torch.Tensor], unet: torch.nn.Module, text_encoders: list[torch.nn.Module] | None = None) -> None:
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        part, name = key.split(".", 1)
        parts.setdefault(part, {})[name] = value
    _set(unet, parts.get("unet", {}))
    for part, te in zip(TE_PARTS, text_encoders or []):
        if part in parts:
            _set(te, {_installed_te(k, te): v for k, v in parts[part].items()})


def _set(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(module, weights)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"LoRA weights do not fit this model: {unexpected[:3]}")
