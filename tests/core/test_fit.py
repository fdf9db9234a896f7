"""The fit estimate: monotone in what costs memory, its parts, and a readable verdict."""

import pytest

from lora_studio.core import fit, optimizers

GB = 1_000_000_000
BASE = dict(gradient_checkpointing=False, base_weights="bf16", train_text_encoder=False, cache_latents=True,
            cache_text_encoder=True, mixed_precision="bf16")


def est(kind="sd1", resolution=512, batch_size=1, rank=16, **kw):
    return fit.estimate_peak_bytes(kind, resolution, batch_size, rank, **{**BASE, **kw})


@pytest.mark.parametrize("kind", fit.KINDS)
@pytest.mark.parametrize("batch_size", [1, 8])
def test_parts_sum_to_the_total(kind, batch_size):
    e = est(kind, batch_size=batch_size)
    assert set(e.parts) == {"weights", "lora+optimizer", "activations", "workspace"}
    assert sum(e.parts.values()) == e.total_bytes
    assert all(v >= 0 for v in e.parts.values())
    assert e.parts["weights"] > 0 and e.parts["workspace"] > 0
    assert 0 < e.allocated_bytes < e.total_bytes
    if e.phase == "training":
        assert e.parts["activations"] > 0 and e.parts["lora+optimizer"] > 0


def test_caching_without_the_unet_stays_within_the_targets():
    # The engine encodes with only the VAE and text encoders on the GPU; the UNet comes afterwards.
    # So SDXL at 1024 px (a 2.7 GB fp32 VAE encode) peaks in the step in bf16, and within 6 GB in fp8.
    bf16 = est("sdxl", 1024, 1, gradient_checkpointing=True)
    fp8 = est("sdxl", 1024, 1, gradient_checkpointing=True, base_weights="fp8")
    assert bf16.phase == "training" and bf16.allocated_bytes <= 8e9
    assert fp8.allocated_bytes <= 6e9
    assert est("sd1", 512, 1, cache_latents=False, cache_text_encoder=False).phase == "training"


@pytest.mark.parametrize("kind", fit.KINDS)
def test_more_batch_resolution_or_rank_costs_more(kind):
    assert est(kind, batch_size=2).total_bytes > est(kind, batch_size=1).total_bytes
    assert est(kind, batch_size=4).total_bytes > est(kind, batch_size=2).total_bytes
    assert est(kind, resolution=768).total_bytes > est(kind, resolution=512).total_bytes
    assert est(kind, resolution=1024).total_bytes > est(kind, resolution=768).total_bytes
    assert est(kind, rank=64).total_bytes > est(kind, rank=16).total_bytes
    assert est(kind, targets="attention+ff").total_bytes > est(kind).total_bytes
    assert est(kind, train_text_encoder=True).total_bytes > est(kind).total_bytes


@pytest.mark.parametrize("kind", fit.KINDS)
@pytest.mark.parametrize("batch_size", [1, 2, 8])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_checkpointing_smaller_weights_and_caching_cost_what_they_should(kind, batch_size, checkpointing):
    # The engine encodes before the UNet goes to the GPU, so caching never costs more than not caching.
    res = 1024 if kind == "sdxl" else 512
    plain = est(kind, res, batch_size, gradient_checkpointing=checkpointing).total_bytes
    assert est(kind, res, batch_size, gradient_checkpointing=True).total_bytes <= plain
    fp8 = est(kind, res, batch_size, gradient_checkpointing=checkpointing, base_weights="fp8").total_bytes
    # fp8 storage pays off only with checkpointing: without it, backward keeps an upcast copy of every weight.
    assert (fp8 < plain) if checkpointing else (fp8 > plain)
    assert est(kind, res, batch_size, gradient_checkpointing=checkpointing, base_weights="fp32").total_bytes > plain
    assert est(kind, res, batch_size, gradient_checkpointing=checkpointing, cache_latents=False).total_bytes > plain
    assert est(kind, res, batch_size, gradient_checkpointing=checkpointing, cache_text_encoder=False).total_bytes >= plain
    assert est(kind, res, batch_size, gradient_checkpointing=checkpointing, base_weights="fp32", mixed_precision="no").total_bytes > plain


@pytest.mark.parametrize("kind", fit.KINDS)
def test_when_the_step_is_the_peak_each_saving_is_strict(kind):
    res, batch = (1024, 8) if kind == "sdxl" else (512, 8)
    plain = est(kind, res, batch, gradient_checkpointing=True)
    assert plain.phase == "training"
    assert est(kind, res, batch).total_bytes > plain.total_bytes  # checkpointing saves
    assert est(kind, res, batch, gradient_checkpointing=True, cache_text_encoder=False).total_bytes > plain.total_bytes
    assert est(kind, res, batch, gradient_checkpointing=True, cache_latents=False).total_bytes > plain.total_bytes


def test_weights_follow_the_parameter_counts():
    # SD1.5's UNet is 859.5 M parameters: 1.72 GB in bf16, 3.44 GB in fp32, ~0.86 GB in fp8.
    assert est("sd1").parts["weights"] == pytest.approx(859_520_964 * 2)
    assert est("sd1", base_weights="fp32", mixed_precision="no").parts["weights"] == pytest.approx(859_520_964 * 4)
    assert est("sd1", base_weights="fp8").parts["weights"] == pytest.approx(0.86 * GB, rel=0.01)
    # Uncached text encoders stay on the GPU during the steps (SDXL: 123 M + 695 M in bf16).
    sdxl = est("sdxl", 1024, 8, gradient_checkpointing=True)
    uncached = est("sdxl", 1024, 8, gradient_checkpointing=True, cache_text_encoder=False)
    assert uncached.parts["weights"] - sdxl.parts["weights"] == (123_060_480 + 694_659_840) * 2
    # rank 16 on SD1.5's attention: 3.19 M LoRA parameters, 16 bytes each with AdamW.
    assert est("sd1").parts["lora+optimizer"] == 199_296 * 16 * 16


def test_each_optimizer_counts_its_own_state():
    # rank 16 on SD1.5's attention (3.19 M LoRA parameters): fp32 weight and gradient (8 bytes) + the state.
    lora = 199_296 * 16
    per_param = {"adamw": 16, "adamw8bit": 10, "prodigy": 24, "adafactor": 8.25, "lion": 12, "lion8bit": 9,
                 "adamw_schedulefree": 16, "came": 12.5}
    assert set(per_param) == set(optimizers.NAMES)
    for name, bytes_each in per_param.items():
        assert est("sd1", optimizer=name).parts["lora+optimizer"] == int(lora * bytes_each), name
    # Cheaper state, smaller total, nothing else changed.
    totals = {name: est("sdxl", 1024, optimizer=name).total_bytes for name in per_param}
    assert totals["adafactor"] < totals["lion8bit"] < totals["adamw8bit"] < totals["lion"] < totals["adamw"] < totals["prodigy"]
    assert totals["adamw_schedulefree"] == totals["adamw"]
    # Factored moments shrink with the rank: a rank-1 LoRA's are as big as its weights.
    assert est("sd1", rank=1, optimizer="adafactor").parts["lora+optimizer"] == 199_296 * 12


def test_auto_precision_resolves_like_the_trainer():
    assert est("sd1", base_weights="auto", mixed_precision="auto").total_bytes == est("sd1").total_bytes
    assert est("sd1", base_weights="auto", mixed_precision="no").parts["weights"] == 859_520_964 * 4
    with pytest.raises(ValueError):
        est("sd1", base_weights="int4")
    with pytest.raises(ValueError):
        est("sd9")


def test_report_strings():
    e = est("sd1")
    assert fit.fit_report(e, 24 * GB) == f"fits (≈ {e.total_bytes / GB:.1f} GB of 24.0 GB)"
    assert fit.fit_report(e, int(e.total_bytes * 0.5)).startswith("does not fit (≈ ")
    assert fit.fit_report(e, int(e.total_bytes * 1.05)).startswith("fits, tightly (≈ ")
    assert fit.fit_report(e, 0).startswith("no GPU found")


def test_each_network_type_counts_its_own_parameters():
    # SD1.5 attention at rank 16: LoRA 3.19 M; DoRA adds one magnitude per output (128 modules' 99,840
    # outputs); LoCon adds the convolutions (3x3 at conv_rank, 1x1 at the rank); LoHa (on the same layers as
    # LoCon, as LyCORIS) two pairs per module, twice LoCon.
    lora = fit.network_params("sd1", 16)
    assert lora == 199_296 * 16
    assert fit.network_params("sd1", 16, network_type="loha") == 2 * fit.network_params("sd1", 16, network_type="locon")
    outputs = sum(o * n for o, _, _, n in fit.LAYERS["sd1"]["attention"])
    assert fit.network_params("sd1", 16, dora=True) == lora + outputs
    convs = sum(n * 8 * (i * 9 + o) for o, i, _, n in fit.LAYERS["sd1"]["conv"])
    shortcuts = sum(n * 16 * (i + o) for o, i, _, n in fit.LAYERS["sd1"]["conv1x1"])
    assert fit.network_params("sd1", 16, network_type="locon", conv_rank=8) == lora + convs + shortcuts
    # LoKr: a 320 x 320 layer splits as 16 x 20 both ways (factor -1): w1 16 x 16 and, rank 16 reaching half of 20, w2 whole.
    assert fit.factorization(320) == (16, 20) and fit.factorization(1280, 8) == (8, 160)
    assert fit.module_params(320, 320, 1, 16, "lokr") == 16 * 16 + 20 * 20
    assert fit.module_params(1280, 1280, 1, 4, "lokr", factor=8) == 8 * 8 + 4 * (160 + 160)
    assert fit.network_params("sd1", 16, network_type="lokr") < lora / 5  # LoKr is small, convolutions and all
    assert fit.network_params("sd1", 16, network_type="lokr", full_matrix=True) > fit.network_params("sd1", 16, network_type="lokr")


def test_the_estimate_follows_the_network_type():
    parts = {t: est("sd1", network_type=t).parts["lora+optimizer"] for t in fit.NETWORK_TYPES}
    assert parts["lora"] == 199_296 * 16 * 16
    assert parts["loha"] == 2 * parts["locon"] and parts["locon"] > parts["lora"] > parts["lokr"]
    plain, dora = est("sd1"), est("sd1", dora=True)
    assert dora.parts["workspace"] > plain.parts["workspace"] and dora.total_bytes > plain.total_bytes
