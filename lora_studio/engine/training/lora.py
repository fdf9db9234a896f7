"""LoRA adapters on the UNet and text encoders (peft), and their weights under canonical names.

Every network type is a peft tuner: lora and locon are `LoraConfig` (locon adds the convolutions,
DoRA is `use_dora`), loha `LoHaConfig`, lokr `LoKrConfig` — peft's LoHa/LoKr are ports of LyCORIS's
modules with the same tensor names and shapes (export/export.py maps them to the file).

The weights travel between the trainer, checkpoints and the exporter as one flat dict:
`"<part>.<module path>.lora_A.weight"` ([rank, in]) / `".lora_B.weight"` ([out, rank]) (DoRA adds
`.lora_magnitude_vector`; LoHa `.hada_w1_a` …, LoKr `.lokr_w1` …), part in unet / te1 / te2. Text-encoder paths are always `text_model.encoder.layers.N…`: transformers ≥ 5.6 keeps
CLIPTextModel's modules at the top level (`encoder.layers.N…`) while CLIPTextModelWithProjection still
nests them under `text_model.`, and the exported names must not depend on the installed version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig, inject_adapter_in_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

# attn1 (self-attention) and attn2 (cross-attention) projections. attn2.to_k / to_v must stay among the
# targets: InvokeAI detects the base model from their down-weight width.
UNET_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
UNET_FEED_FORWARD = ["ff.net.0.proj", "ff.net.2"]
TEXT_ENCODER = ["q_proj", "k_proj", "v_proj", "out_proj"]
TE_PARTS = ("te1", "te2")
# What LoCon adds (and LoHa / LoKr cover too, as LyCORIS does): the ResNet convolutions, the down/up
# samplers' conv and, where they are convolutions (SD1), the transformers' proj_in / proj_out.
UNET_CONVS = ("conv1", "conv2", "conv_shortcut", "conv", "proj_in", "proj_out")
# The 3x3 convolutions train at network.conv_rank / conv_alpha; 1x1 ones (conv_shortcut, proj_in/out)
# at the network's rank, as LyCORIS and kohya's LoCon do. By name, so the exporter knows each module's
# alpha from its name alone (in every SD UNet these are exactly the 3x3 convolutions).
CONV_3X3 = re.compile(r"(^|\.)(resnets\.\d+\.conv[12]|(down|up)samplers\.\d+\.conv)$")
# LoKr's "full matrix" (LyCORIS full_matrix): a rank no layer reaches makes peft store both factors
# whole, with alpha equal to it, so the scale is 1 as in LyCORIS.
FULL_RANK = 1_000_000
ADAPTER_PREFIXES = ("lora_", "hada_", "lokr_")


def lora_config(rank: int, alpha: float, targets: list[str], dropout: float = 0.0) -> LoraConfig:
    # init_lora_weights=True: A Kaiming-uniform, B zero, so step 0 is exactly the base model.
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, init_lora_weights=True)


def unet_targets(targets: str) -> list[str]:
    return UNET_ATTENTION + (UNET_FEED_FORWARD if targets == "attention+ff" else [])


def has_convs(net) -> bool:
    return net.type in ("locon", "loha", "lokr")


def module_rank_alpha(path: str, net) -> tuple[int, float]:
    """The rank and alpha a module trains at (the exporter writes the same alpha)."""
    if net.type == "lokr" and net.full_matrix:
        return FULL_RANK, float(FULL_RANK)
    if has_convs(net) and CONV_3X3.search(path):
        return net.conv_rank, net.conv_alpha
    return net.rank, net.alpha


def unet_module_targets(unet: torch.nn.Module, net) -> list[str]:
    """The UNet module paths the network trains: attention (+ff) and, for locon/loha/lokr, the convolutions."""
    suffixes = unet_targets(net.targets)
    out = []
    for name, module in unet.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if any(name == s or name.endswith("." + s) for s in suffixes):
            out.append(name)
        elif has_convs(net) and leaf in UNET_CONVS and isinstance(module, torch.nn.Conv2d) and name not in ("conv_in", "conv_out"):
            out.append(name)
    return out


def network_config(net, targets: list[str]):
    """The peft config of `net` (a core.config.NetworkConfig) for these target module paths."""
    conv_keys = [t for t in targets if CONV_3X3.search(t)] if has_convs(net) else []
    rank_pattern = {re.escape(t): module_rank_alpha(t, net)[0] for t in conv_keys}
    alpha_pattern = {re.escape(t): module_rank_alpha(t, net)[1] for t in conv_keys}
    rank, alpha = module_rank_alpha("", net)
    if net.type in ("lora", "locon"):
        # init_lora_weights=True: A Kaiming-uniform, B zero, so step 0 is exactly the base model.
        return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=net.dropout, init_lora_weights=True,
                          use_dora=net.uses_dora, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    # LyCORIS types: peft's default init zeroes one factor (LoHa hada_w2_b, LoKr lokr_w1), so step 0 is the
    # base model too. Dropout drops whole ranks, LyCORIS's rank_dropout.
    common = dict(r=rank, alpha=alpha, target_modules=targets, rank_dropout=net.dropout, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    if net.type == "loha":
        return LoHaConfig(**common)
    if net.type == "lokr":
        return LoKrConfig(**common, decompose_factor=net.factor)
    raise ValueError(f"unknown network type {net.type!r}")


def unet_network(unet: torch.nn.Module, net):
    return network_config(net, unet_module_targets(unet, net))


def text_encoder_network(net):
    return network_config(net, TEXT_ENCODER)


NETWORK_STATE_KEYS = ("type", "dora", "rank", "alpha", "conv_rank", "conv_alpha", "factor", "full_matrix", "targets")


def network_state(net) -> dict:
    """What a checkpoint's state.json records to rebuild the network (compare, evaluate, export)."""
    return {k: getattr(net, k) for k in NETWORK_STATE_KEYS}


def network_from_state(state: dict, net):
    """The network a checkpoint was trained with: its state.json's record over the run's config (older
    checkpoints record only rank and alpha: their type is the config's, lora)."""
    recorded = dict(state.get("network") or {})
    recorded.setdefault("rank", state.get("rank", net.rank))
    recorded.setdefault("alpha", state.get("alpha", net.alpha))
    return dataclasses.replace(net, **{k: v for k, v in recorded.items() if k in NETWORK_STATE_KEYS})


def adapter_layers(modules):
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lycoris_utils import LycorisLayer

    return [layer for m in modules for layer in m.modules() if isinstance(layer, (LoraLayer, LycorisLayer))]


_STRENGTH_HOOK = "_lora_studio_strength_hook"


def set_strength(modules, strength: float, adapter: str = "default") -> None:
    """Apply the adapter at `strength` (1.0 = as trained) the way the UIs do: W + strength x ΔW. At 0 the
    adapter is off: exactly the base model. DoRA's ΔW is (its merged weight - W), as ComfyUI's and A1111's
    loaders scale it; peft's own scale would act inside the weight norm instead, so a DoRA layer at a
    strength between runs whole and its output is interpolated with the base layer's (a layer is linear in
    its weight, so this is that weight's output exactly)."""
    for layer in adapter_layers(modules):
        layer.enable_adapters(strength != 0)
        hook = getattr(layer, _STRENGTH_HOOK, None)
        if hook is not None:
            hook.remove()
            setattr(layer, _STRENGTH_HOOK, None)
        if getattr(layer, "use_dora", {}).get(adapter, False) and strength not in (0, 1):
            layer.set_scale(adapter, 1.0)
            setattr(layer, _STRENGTH_HOOK, layer.register_forward_hook(_interpolated(strength), with_kwargs=True))
        else:
            layer.set_scale(adapter, strength)  # absolute: strength x alpha / rank


def _interpolated(strength: float):
    def hook(layer, args, kwargs, output):
        base = layer.get_base_layer()(*args, **kwargs)
        return base + strength * (output - base)

    return hook


@contextlib.contextmanager
def adapters_off(modules):
    """The modules as the base model (every adapter switched off); switched back on after."""
    layers = adapter_layers(modules)
    try:
        for layer in layers:
            layer.enable_adapters(False)
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def add_lora(module: torch.nn.Module, config) -> list[torch.nn.Parameter]:
    """Inject the adapter; return its parameters, which train in fp32 whatever the base dtype."""
    inject_adapter_in_model(config, module)
    params = [p for n, p in module.named_parameters() if any(t in n for t in ADAPTER_PREFIXES)]
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
