"""Every network type (LoRA, LoCon, LoHa, LoKr, DoRA) exports the contract's tensors ("LyCORIS files" in
shared/design/export-contract.md): names on the real SD1.5 / SDXL modules, shapes, alphas, dora_scale
along the output axis, and a file that applies exactly what was trained the way ComfyUI's loader does."""

from __future__ import annotations

import json

import pytest
import torch
from engine_fixtures import assert_lora_loads_changes_and_vanishes_at_zero, make_dataset, tiny_config

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core import fit
from lora_studio.core.resources import resource
from lora_studio.engine.export import verify
from lora_studio.engine.export.export import to_kohya
from lora_studio.engine.export.inspect_lora import format_info, inspect_file
from lora_studio.engine.models import tiny
from lora_studio.engine.training import lora
from lora_studio.engine.training.loop import train

NETWORKS = {
    "lora": {"type": "lora"},
    "locon": {"type": "locon"},
    "loha": {"type": "loha"},
    "lokr": {"type": "lokr", "factor": 8},
    "lokr_full": {"type": "lokr", "full_matrix": True},
    "dora": {"type": "lora", "dora": True},
    "locon_dora": {"type": "locon", "dora": True},
}
DTYPES = {torch.float16: "F16", torch.float32: "F32"}


def _header(tensors):
    return {k: {"shape": list(v.shape), "dtype": DTYPES[v.dtype]} for k, v in tensors.items()}


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_full_size_names_shapes_and_parameter_counts(kind, name):
    """On the real architectures (meta device, no weights): peft's parameters are what core/fit counts, and
    every exported key places on a real module with the shape its algorithm needs."""
    unet, encoders = verify.meta_from_folder(resource("models", kind), kind)
    ref = verify.reference_modules(kind, unet, encoders)
    net = config_mod.NetworkConfig(**NETWORKS[name])  # the default ranks: 16 / alpha 16, conv 8 / 4
    params = lora.add_lora(unet, lora.unet_network(unet, net))
    for te in encoders:
        params += lora.add_lora(te, lora.text_encoder_network(net))
    n = sum(p.numel() for p in params)
    assert n == fit.network_params(kind, net.rank, network_type=net.type, conv_rank=net.conv_rank, dora=net.dora,
                                   factor=net.factor, full_matrix=net.full_matrix, train_text_encoder=True)
    state = {f"unet.{k}": torch.zeros(v.shape) for k, v in lora.get_peft_model_state_dict(unet).items()}
    for part, te in zip(lora.TE_PARTS, encoders):
        state.update({f"{part}.{lora._canonical_te(k)}": torch.zeros(v.shape) for k, v in lora.get_peft_model_state_dict(te).items()})
    tensors = to_kohya(state, kind, net.alpha, torch.float16, net=net)
    assert verify.check_tensors(_header(tensors), ref) == []
    names = {k.split(".")[0] for k in tensors}
    convs = {x for x in names if "_resnets_" in x or "samplers_" in x}
    attention = {x for x in names if "_transformer_blocks_" in x}
    assert len(attention) == (128 if kind == "sd1" else 560)
    assert bool(convs) == (net.type != "lora")
    if net.type != "lora":  # LoCon's layers: every ResNet conv1/conv2/shortcut and sampler conv
        expected = sum(c for _, _, _, c in fit.LAYERS[kind]["conv"] + fit.LAYERS[kind]["conv1x1"])
        proj = {x for x in names if x.endswith(("_proj_in", "_proj_out"))}
        assert len(convs) + len(proj) == expected and bool(proj) == (kind == "sd1")  # SD1's proj_in/out are convolutions
    if net.dora:
        for x in names:
            assert tuple(tensors[f"{x}.dora_scale"].shape) == (tensors[f"{x}.lora_up.weight"].shape[0],) + (1,) * (tensors[f"{x}.lora_down.weight"].dim() - 1)
    assert all(torch.isfinite(tensors[f"{x}.alpha"]) for x in names)
    # Only suffixes ComfyUI / Forge / A1111 read for that algorithm (export-contract.md "LyCORIS files").
    readable = {"lora": {"lora_down.weight", "lora_up.weight"}, "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"},
                "lokr": {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"}}
    expected = readable["lora" if net.type == "locon" else net.type] | {"alpha"} | ({"dora_scale"} if net.uses_dora else set())
    assert {k.split(".", 1)[1] for k in tensors} <= expected


# --- the file applies what was trained ---------------------------------------------------------

def _comfy_delta(t: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """ΔW of one module as ComfyUI's weight adapters compute it from the file (lora / loha / lokr)."""
    alpha = float(t["alpha"])
    if "lora_down.weight" in t:
        up, down = t["lora_up.weight"], t["lora_down.weight"]
        return (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * alpha / down.shape[0]
    if "hada_w1_a" in t:
        return ((t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])).reshape(weight.shape) * alpha / t["hada_w1_b"].shape[0]
    dim = None
    w1 = t.get("lokr_w1")
    if w1 is None:
        dim, w1 = t["lokr_w1_b"].shape[0], t["lokr_w1_a"] @ t["lokr_w1_b"]
    w2 = t.get("lokr_w2")
    if w2 is None:
        dim, w2 = t["lokr_w2_b"].shape[0], t["lokr_w2_a"] @ t["lokr_w2_b"]
    if w2.dim() == 4:
        w1 = w1.unsqueeze(2).unsqueeze(2)
    return torch.kron(w1, w2).reshape(weight.shape) * (alpha / dim if dim else 1.0)


def _comfy_apply(t: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    calc = weight + _comfy_delta(t, weight)
    if "dora_scale" in t:  # ComfyUI weight_decompose, output axis (dora_scale.shape[0] == out)
        assert t["dora_scale"].shape[0] == weight.shape[0]
        norm = calc.reshape(calc.shape[0], -1).norm(dim=1, keepdim=True).reshape(calc.shape[0], *[1] * (calc.dim() - 1))
        calc = calc * (t["dora_scale"] / norm)
    return calc


@pytest.mark.parametrize("name", list(NETWORKS) + ["lokr_small_rank"])
def test_the_file_applies_what_was_trained(name):
    torch.manual_seed(0)
    unet = tiny.unet("sd1")
    # lokr_small_rank: rank 1 on 32-wide layers split 4 x 8, so w2 is stored as w2_a @ w2_b and alpha / rank applies.
    chosen = NETWORKS[name] if name in NETWORKS else {"type": "lokr", "rank": 1, "factor": 4}
    net = config_mod.NetworkConfig(**{"rank": 4, "alpha": 2.0, "conv_rank": 2, "conv_alpha": 3.0, **chosen})
    params = lora.add_lora(unet, lora.unet_network(unet, net))
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.2)
    state = lora.lora_state(unet)
    tensors = to_kohya(state, "sd1", net.alpha, torch.float32, net=net)
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        module, _, suffix = k.partition(".")
        by_module.setdefault(module, {})[suffix] = v
    layers = {f"lora_unet_{n.replace('.', '_')}": m for n, m in unet.named_modules() if hasattr(m, "base_layer") and hasattr(m, "merge")}
    assert set(by_module) == set(layers)
    if name == "lokr_small_rank":
        assert any("lokr_w2_b" in t for t in by_module.values())
    for module, t in by_module.items():
        layer = layers[module]
        weight = layer.get_base_layer().weight.detach().clone()
        expected = _comfy_apply(t, weight)
        layer.merge()  # peft's own merged weight: what training saw
        assert torch.allclose(layer.get_base_layer().weight, expected, atol=1e-5, rtol=1e-4), module


# --- a real run of each type, on SD1 and SDXL --------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "10_tstyle", n=2, sizes=((64, 64),))


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
@pytest.mark.parametrize("name", ["lora", "locon", "loha", "lokr", "locon_dora"])
def test_a_run_of_each_type_exports_a_file_the_self_check_accepts(tiny_models, dataset, tmp_path, kind, name):
    net = {"rank": 4, "alpha": 2.0, "conv_rank": 2, "conv_alpha": 1.0, **NETWORKS[name]}
    cfg = tiny_config(tiny_models(kind), dataset, tmp_path / "run", network=net,
                      train={"max_steps": 2, "batch_size": 1, "learning_rate": 1e-2, "resolution": 64, "checkpoint_every": 0, "log_every": 1})
    sink = ev.ListSink()
    finished = train(cfg, sink)
    assert finished.status == "completed"
    exported = sink.of_type(ev.Exported)[0]
    assert exported.verified, exported.problems
    info = inspect_file(exported.path, base=tiny_models(kind))
    assert info["verification"]["verified"] and info["architecture"] == kind
    assert info["network_type"] == NETWORKS[name]["type"] and info["dora"] == NETWORKS[name].get("dora", False)
    assert info["extra_key_count"] == 0
    from safetensors import safe_open

    with safe_open(exported.path, framework="pt") as f:
        md = f.metadata()
    if name == "lora":
        assert md["ss_network_module"] == "networks.lora" and "ss_network_args" not in md
    else:
        assert md["ss_network_module"] == "lycoris.kohya"
        args = json.loads(md["ss_network_args"])
        assert all(isinstance(v, str) for v in args.values())
        assert args["algo"] == NETWORKS[name]["type"] and args["conv_dim"] == "2" and args["conv_alpha"] == "1"
        assert args.get("dora_wd") == ("True" if "dora" in name else None)
        if name == "lokr":
            assert args["factor"] == "8"
    text = format_info(info)
    # What inspect says about diffusers is what diffusers does.
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe = (StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline).from_pretrained(str(tiny_models(kind)))
    if info["diffusers_loads"]:
        assert "load_lora_weights" in text and "cannot" not in text
        if not info["dora"]:
            assert_lora_loads_changes_and_vanishes_at_zero(pipe, exported.path)
        else:
            pipe.load_lora_weights(exported.path, adapter_name="style")  # drops dora_scale, loads the rest
    else:
        assert "cannot load" in text
        with pytest.raises(Exception):  # noqa: B017 - whatever diffusers raises, it does not load the file
            pipe.load_lora_weights(exported.path, adapter_name="style")
