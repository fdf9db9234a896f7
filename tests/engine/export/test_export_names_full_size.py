"""Export names of an attention-only LoRA land on the real SD1.5 and SDXL modules, with the right shapes.

The architectures are built from the shipped configs on the meta device: no weights, no training.
"""

from __future__ import annotations

import pytest
import torch

from lora_studio.core.config import Config
from lora_studio.core.resources import resource
from lora_studio.engine.export import kohya
from lora_studio.engine.export.export import to_kohya, write_kohya
from lora_studio.engine.export.inspect_lora import inspect_file
from lora_studio.engine.export.verify import RANK, meta_from_folder, reference_modules, verify_file

UNET_ATTN = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
TE_ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
# kind, UNet attention modules (transformer blocks x 8), text-encoder layers, their widths, context width
CASES = [("sd1", 128, (12,), (768,), 768), ("sdxl", 560, (12, 32), (768, 1280), 2048)]


def _meta_models(kind: str):
    return meta_from_folder(resource("models", kind), kind)


@pytest.mark.parametrize(("kind", "n_unet", "te_layers", "te_widths", "context"), CASES)
def test_attention_lora_names_map_onto_the_real_modules(tmp_path, kind, n_unet, te_layers, te_widths, context):
    unet, encoders = _meta_models(kind)
    rank = 2
    lora: dict[str, torch.Tensor] = {}
    for name, m in unet.named_modules():
        if name.endswith(UNET_ATTN):
            lora[f"unet.{name}.lora_A.weight"] = torch.zeros(rank, m.in_features)
            lora[f"unet.{name}.lora_B.weight"] = torch.zeros(m.out_features, rank)
    assert len(lora) // 2 == n_unet
    for part, te in zip(("te1", "te2"), encoders):
        for name, m in te.named_modules():
            if name.endswith(TE_ATTN):
                path = name if name.startswith("text_model.") else f"text_model.{name}"  # as the trainer writes it
                lora[f"{part}.{path}.lora_A.weight"] = torch.zeros(rank, m.in_features)
                lora[f"{part}.{path}.lora_B.weight"] = torch.zeros(m.out_features, rank)

    tensors = to_kohya(lora, kind, alpha=1.0, dtype=torch.float16)
    ref = reference_modules(kind, unet, encoders)
    names = {k.split(".")[0] for k in tensors}
    assert len(names) == n_unet + 4 * sum(te_layers)
    for n in names:
        down, up = ref[n]  # KeyError = a name no UI could place
        assert tensors[f"{n}.lora_down.weight"].shape == tuple(rank if d == RANK else d for d in down)
        assert tensors[f"{n}.lora_up.weight"].shape == tuple(rank if d == RANK else d for d in up)
        assert kohya.parse_kohya_name(n)[1].replace(".", "_") in n

    prefixes = ("lora_te_",) if kind == "sd1" else ("lora_te1_", "lora_te2_")
    for prefix, layers, width in zip(prefixes, te_layers, te_widths):
        te_names = [n for n in names if n.startswith(prefix)]
        assert len(te_names) == 4 * layers
        assert f"{prefix}text_model_encoder_layers_{layers - 1}_self_attn_q_proj" in te_names
        assert tensors[f"{prefix}text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"].shape == (rank, width)
    # InvokeAI tells the base apart by the cross-attention key's input width.
    to_k = [n for n in names if n.endswith("attn2_to_k")]
    assert to_k and {tensors[f"{n}.lora_down.weight"].shape[1] for n in to_k} == {context}
    if kind == "sdxl":  # SDXL has no cross-attention in its first down block
        assert not any(n.startswith("lora_unet_down_blocks_0_") for n in names)

    # Written and re-read as a whole file: verified against the real architecture, recognised by inspect.
    state = {"step": 1, "model_kind": kind, "prediction": "epsilon", "rank": rank, "alpha": 1.0, "resolution": 1024 if kind == "sdxl" else 512}
    out = write_kohya(lora, state, Config(), tmp_path / f"{kind}.safetensors", preview_src=None)
    assert verify_file(out, ref) == []
    info = inspect_file(out)
    assert info["architecture"] == kind and info["module_count"] == len(names)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_every_module_name_round_trips(kind):
    unet, encoders = _meta_models(kind)
    ref = reference_modules(kind, unet, encoders)
    paths = {n: kohya.parse_kohya_name(n) for n in ref}
    for part, model in [("unet", unet)] + list(zip(("te1", "te2"), encoders)):
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                expected = name if part == "unet" else kohya.canonical_te_path(name)
                assert paths[kohya.kohya_name(part, name, kind)] == (part, expected)
