"""The benchmark harness on the tiny models: the JSON it writes, both sides measured alike, FLOP counting.

Timings are recorded, never asserted (docs/performance.md holds the measured figures).
"""

import json

import pytest
import torch

from lora_studio.engine.bench import bench, fit_calibration, measure
from lora_studio.engine.models import tiny


@pytest.fixture(scope="module")
def tiny_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out.json"
    assert bench.bench_command("tiny", steps=3, batch_size=2, json_path=out) == 0
    return json.loads(out.read_text())


def test_json_has_the_documented_structure(tiny_doc):
    assert {"lora_studio", "reference", "speedup", "device", "settings", "versions", "date"} <= set(tiny_doc)
    assert tiny_doc["speedup"] == pytest.approx(tiny_doc["lora_studio"]["samples_per_s"] / tiny_doc["reference"]["samples_per_s"])
    assert tiny_doc["settings"]["preset"] == "tiny"
    assert tiny_doc["settings"]["batch_size"] == 2
    assert tiny_doc["settings"]["timed_steps_per_side"] == 3
    assert {"torch", "diffusers", "transformers", "peft", "accelerate"} <= set(tiny_doc["versions"])
    assert tiny_doc["device"].startswith("CPU")


@pytest.mark.parametrize("side", ["lora_studio", "reference"])
def test_each_side_reports_speed_memory_and_flops(tiny_doc, side):
    b = tiny_doc[side]
    assert b["steps"] == 3
    assert b["samples_per_s"] > 0
    assert b["median_step_s"] > 0
    assert b["peak_memory_bytes"] > 0
    assert b["resident_bytes"] > 0 and b["transient_peak_bytes"] > 0
    assert b["peak_memory_bytes"] >= b["resident_bytes"] + b["transient_peak_bytes"] or b["peak_memory_bytes"] == b["setup_peak_bytes"]
    assert b["flops_per_step"] > 0
    assert b["mfu"] is not None and 0 < b["mfu"]
    assert b["host_syncs_per_step"] is None  # counted on CUDA only (torch's sync debug mode)


def test_both_sides_train_with_the_same_settings(tiny_doc):
    ours, ref = tiny_doc["lora_studio"]["settings"], tiny_doc["reference"]["settings"]
    assert tiny_doc["settings"]["settings_match"], tiny_doc["settings"]["mismatched_settings"]
    for key in bench.SETTING_KEYS_THAT_MUST_MATCH:
        assert ours[key] == ref[key], key
    assert ours["rank"] == [16] and ours["batch_size"] == 2 and ours["resolution"] == 64
    assert ours["lora_modules"] > 0 and ours["lora_dtype"] == ["float32"]


def test_the_reference_does_more_work_per_step(tiny_doc):
    # It runs the VAE and the text encoder every step; ours trains on cached latents and embeddings.
    assert tiny_doc["reference"]["flops_per_step"] > tiny_doc["lora_studio"]["flops_per_step"]



def test_fp8_base_weights_are_benched_and_reported_as_differing_from_the_recipe():
    # The sdxl-1024-fp8 preset's path, on the tiny model: our side stores its base in fp8 (engine/training/fp8.py),
    # the reference keeps the recipe's storage, and the JSON says the settings differ in exactly that.
    doc = bench.run_bench("tiny", steps=2, batch_size=2, base_weights="fp8", log=lambda _s: None)
    assert doc["settings"]["base_weights"] == "fp8"
    assert doc["lora_studio"]["settings"]["base_dtype"] == "float8_e4m3fn"
    assert doc["reference"]["settings"]["base_dtype"] == "float32"
    assert set(doc["settings"]["mismatched_settings"]) == {"base_dtype"}
    assert doc["lora_studio"]["samples_per_s"] > 0 and doc["lora_studio"]["resident_bytes"] < doc["reference"]["resident_bytes"]
    assert bench.PRESETS["sdxl-1024-fp8"].base_weights == "fp8" and bench.PRESETS["sdxl-1024-fp8"].gradient_checkpointing

def _unet_step(unet, batch_size):
    x = torch.randn(batch_size, 4, 8, 8)
    e = torch.randn(batch_size, 77, 32)
    t = torch.randint(0, 1000, (batch_size,))

    def step():
        out = unet(x, t, e).sample
        out.float().pow(2).mean().backward()

    return step


def test_flop_counter_counts_a_unet_step_and_scales_with_batch():
    torch.manual_seed(0)
    unet = tiny.unet("sd1")
    unet.requires_grad_(False)
    unet.conv_in.requires_grad_(True)  # something to backpropagate into, through the whole UNet
    flops = {b: measure.count_flops(_unet_step(unet, b)) for b in (1, 2, 4)}
    assert flops[1] > 0
    assert flops[2] / flops[1] == pytest.approx(2, rel=0.05)
    assert flops[4] / flops[1] == pytest.approx(4, rel=0.05)


def test_flop_counter_includes_cpu_attention():
    # The stock FlopCounterMode has no formula for the CPU flash-attention kernels; ours adds it.
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(2, 4, 64, 16, requires_grad=True)

    def attn():
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()

    with FlopCounterMode(display=False) as stock:
        attn()
    ours = measure.count_flops(attn)
    # Forward QK^T and AV: 2 * (2 * B * H * N * N * D); torch counts 2.5 times that for backward (five
    # matmuls: flash attention recomputes the scores).
    forward = 2 * 2 * 2 * 4 * 64 * 64 * 16
    assert ours - stock.get_total_flops() == pytest.approx(3.5 * forward, rel=0.01)


def test_live_tensor_bytes_tracks_allocations_and_frees():
    tracker = measure.LiveTensorBytes()
    with tracker:
        a = torch.empty(1000, dtype=torch.float32)
        b = torch.empty(500, dtype=torch.float32)
        del a
        c = torch.empty(250, dtype=torch.float32)
    assert tracker.peak == 6000
    assert tracker.current == 3000
    del b, c
    assert tracker.current == 0


@pytest.mark.parametrize("base_weights", ["bf16", "fp8"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_fit_estimate_matches_a_simulated_full_size_step(checkpointing, base_weights):
    # The real SD1.5 UNet with our LoRA, shapes only (FakeTensorMode): the estimate's training phase must stay
    # within 10 % of the simulated peak, so a change to the UNet, the LoRA targets, the step or the fp8 storage
    # (engine/training/fp8.py, simulated as the trainer stores it) shows up here.
    from lora_studio.core import fit

    sim = fit_calibration.simulate_step_memory("sd1", 256, 1, 16, gradient_checkpointing=checkpointing, base_weights=base_weights)
    est = fit.estimate_peak_bytes("sd1", 256, 1, 16, gradient_checkpointing=checkpointing, base_weights=base_weights,
                                  mixed_precision="bf16", phase="training")
    assert est.parts["weights"] == sim["weights"]
    assert est.parts["lora+optimizer"] == pytest.approx(sim["lora_optimizer"] * 16 / 12, rel=0.01)  # + gradients
    modeled = est.allocated_bytes - fit.CUBLAS_WORKSPACE_BYTES
    assert modeled == pytest.approx(sim["peak"], rel=0.10)
