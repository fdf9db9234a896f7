"""Every network type (lora, locon, loha, lokr, DoRA) trains, resumes exactly and rebuilds from its checkpoint."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import make_dataset, tiny_config
from safetensors.torch import load_file

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.engine.training import checkpoint, lora
from lora_studio.engine.training.loop import ScriptedCommands, train

NETWORKS = {
    "lora": {"type": "lora"},
    "locon": {"type": "locon", "conv_rank": 2, "conv_alpha": 1.0},
    "loha": {"type": "loha", "conv_rank": 2, "conv_alpha": 1.0},
    "lokr": {"type": "lokr", "factor": 4, "rank": 2},
    "lokr_full": {"type": "lokr", "full_matrix": True},
    "dora": {"type": "lora", "dora": True},
    "locon_dora": {"type": "locon", "dora": True},
}
# What each type's UNet tensors are called (peft's names; export.py maps them to LyCORIS's).
SUFFIXES = {"lora": "lora_A.weight", "locon": "lora_A.weight", "loha": "hada_w1_a", "lokr": "lokr_w1", "lokr_full": "lokr_w1",
            "dora": "lora_magnitude_vector", "locon_dora": "lora_magnitude_vector"}


def run(cfg, commands=None, resume=False):
    sink = ev.ListSink()
    return train(cfg, sink, commands, resume=resume), sink


def final(run_dir):
    step, path = checkpoint.list_checkpoints(run_dir)[-1]
    return step, load_file(path / "lora.safetensors"), checkpoint.load(path, weights_only=True).state


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "10_tstyle", n=4)


def network(name, **extra):
    return {"rank": 4, "alpha": 2.0, **NETWORKS[name], **extra}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_stop_then_resume_equals_a_straight_run_for_every_network_type(tiny_model_dir, dataset, tmp_path, name):
    base = dict(network=network(name), train={"max_steps": 6, "checkpoint_every": 3, "lr_scheduler": "cosine", "warmup_steps": 1,
                                              "optimizer": "adamw", "learning_rate": 1e-2})
    run(tiny_config(tiny_model_dir, dataset, tmp_path / "straight", **base))
    split = tiny_config(tiny_model_dir, dataset, tmp_path / "split", **base)
    first, _ = run(split, ScriptedCommands({4: ["stop"]}))
    assert first.status == "stopped" and first.step == 4
    resumed, _ = run(split, resume=True)
    assert resumed.status == "completed" and resumed.step == 6
    step_a, a, state = final(tmp_path / "straight")
    step_b, b, _ = final(tmp_path / "split")
    assert step_a == step_b == 6 and a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert any(k.endswith(SUFFIXES[name]) for k in a)
    convs = [k for k in a if ".resnets." in k or "samplers" in k]
    assert bool(convs) == (NETWORKS[name]["type"] != "lora")
    # The checkpoint records the network, and the network rebuilt from it takes the weights back.
    net = lora.network_from_state(state, config_mod.NetworkConfig())
    assert net.type == NETWORKS[name]["type"] and net.dora == NETWORKS[name].get("dora", False)
    from lora_studio.engine.models import tiny

    unet = tiny.unet("sd1")
    lora.add_lora(unet, lora.unet_network(unet, net))
    lora.load_lora_state({k: v for k, v in a.items() if k.startswith("unet.")}, unet)
    back = lora.lora_state(unet)
    assert all(torch.equal(back[k], a[k]) for k in back)


def test_older_checkpoints_rebuild_as_plain_lora():
    net = lora.network_from_state({"rank": 8, "alpha": 4.0}, config_mod.NetworkConfig())
    assert (net.type, net.dora, net.rank, net.alpha) == ("lora", False, 8, 4.0)


@pytest.mark.parametrize("name", ["dora", "locon_dora", "loha", "lokr"])
def test_strength_zero_is_the_base_model(name):
    from lora_studio.engine.models import tiny

    torch.manual_seed(0)
    unet = tiny.unet("sd1")
    sample, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 4, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(sample, t, ctx).sample
        net = config_mod.NetworkConfig(**network(name))
        params = lora.add_lora(unet, lora.unet_network(unet, net))
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)  # a trained adapter: nothing is zero any more
        changed = unet(sample, t, ctx).sample
        lora.set_strength([unet], 0.0)
        at_zero = unet(sample, t, ctx).sample
        lora.set_strength([unet], 1.0)
        assert torch.equal(unet(sample, t, ctx).sample, changed)
        with lora.adapters_off([unet]):
            off = unet(sample, t, ctx).sample
    assert (changed - before).abs().max() > 1e-3
    assert torch.allclose(at_zero, before, atol=1e-6) and torch.allclose(off, before, atol=1e-6)


@pytest.mark.parametrize("name", ["locon_dora", "loha", "lokr"])
def test_every_type_trains_on_fp8_base_weights(name):
    # fp8 storage (engine/training/fp8.py) hands each layer an upcast weight: DoRA's weight norm and the
    # LyCORIS types' merged weights read it like any other.
    from lora_studio.engine.models import tiny
    from lora_studio.engine.training.fp8 import store_in_fp8

    torch.manual_seed(0)
    unet = tiny.unet("sd1").requires_grad_(False)
    store_in_fp8(unet, torch.float32)
    params = lora.add_lora(unet, lora.unet_network(unet, config_mod.NetworkConfig(**network(name))))
    sample, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 4, unet.config.cross_attention_dim)
    unet(sample, t, ctx).sample.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)


def test_dora_left_on_with_loha_or_lokr_is_kept_but_unused():
    # The app hides DoRA for loha / lokr (places.APPLIES) and keeps its value, so it must neither block
    # the run nor change it.
    from lora_studio.core.config import validate
    from lora_studio.core.fit import network_params
    from lora_studio.engine.export.export import network_metadata
    from lora_studio.engine.models import tiny

    for kind in ("loha", "lokr"):
        net = config_mod.NetworkConfig(type=kind, dora=True)
        assert not net.uses_dora
        cfg = config_mod.Config().replace(network={"type": kind, "dora": True}, model={"base": "m"}, dataset={"path": "d"}, output={"dir": "o"})
        assert validate(cfg) == []
        assert "dora_wd" not in network_metadata(net)["ss_network_args"]
        assert network_params("sd1", 16, network_type=kind, dora=True) == network_params("sd1", 16, network_type=kind)
        unet = tiny.unet("sd1")
        lora.add_lora(unet, lora.unet_network(unet, net))
        assert not any("magnitude" in k for k in lora.lora_state(unet))


@pytest.mark.parametrize("name", ["lora", "locon_dora", "loha", "lokr"])
def test_a_strength_between_is_the_base_weight_plus_that_share_of_the_change(name):
    # As ComfyUI / A1111 apply a strength: W + s x ΔW, with DoRA's ΔW its whole merged weight minus W.
    from lora_studio.engine.models import tiny

    torch.manual_seed(0)
    unet = tiny.unet("sd1")
    with torch.no_grad():
        for p in lora.add_lora(unet, lora.unet_network(unet, config_mod.NetworkConfig(**network(name)))):
            p.add_(torch.randn_like(p) * 0.2)
        layers = lora.adapter_layers([unet])
        checked = 0
        for layer in layers:
            base = layer.get_base_layer()
            x = torch.randn(2, 3, base.in_features) if isinstance(base, torch.nn.Linear) else torch.randn(1, base.in_channels, 6, 6)
            outs = {}
            for s in (0.0, 1.0, 0.5):
                lora.set_strength([layer], s)
                outs[s] = layer(x)
            assert torch.allclose(outs[0.5], outs[0.0] + 0.5 * (outs[1.0] - outs[0.0]), atol=1e-5)
            checked += 1
        lora.set_strength(layers, 1.0)
    assert checked == len(layers) > 10
