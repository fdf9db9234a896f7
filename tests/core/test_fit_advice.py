"""The estimate applied to a run's settings: suggestions that fit, the out-of-memory fix, the words shown."""

import pytest

from lora_studio.core import fit, fit_advice
from lora_studio.core.config import Config

GB = 1_000_000_000


def _cfg(**train):
    return Config().replace(model={"kind": train.pop("kind", "sdxl")}, train=train)


def test_suggestions_fit_and_come_in_order():
    cfg = _cfg(kind="sdxl", resolution=1024, batch_size=4, gradient_checkpointing=False, mixed_precision="bf16", base_weights="fp32")
    gpu = 12 * GB
    assert not fit.fits(fit_advice.estimate_for_config(cfg), gpu)
    suggestions = fit_advice.suggest_settings(cfg, gpu)
    assert suggestions
    for description, changes in suggestions:
        assert "GB of 12.0 GB" in description
        assert fit.fits(fit_advice.estimate_for_config(fit_advice.with_changes(cfg, changes)), gpu), description
    first = suggestions[0][1]
    # The ladder starts with checkpointing, then cheaper weights, before touching batch or resolution.
    assert first["train.gradient_checkpointing"] is True
    assert "train.resolution" not in first


def test_nearest_suggestion_is_only_checkpointing_when_that_is_enough():
    cfg = _cfg(kind="sd1", resolution=768, batch_size=4, gradient_checkpointing=False, mixed_precision="bf16", base_weights="bf16")
    need = fit_advice.estimate_for_config(cfg).total_bytes
    with_ckpt = fit_advice.estimate_for_config(fit_advice.with_changes(cfg, {"train.gradient_checkpointing": True})).total_bytes
    gpu = (need + with_ckpt) // 2
    suggestions = fit_advice.suggest_settings(cfg, gpu)
    assert suggestions[0][1] == {"train.gradient_checkpointing": True}
    assert suggestions[0][0].startswith("turn on gradient checkpointing")


def test_no_suggestions_when_it_fits_or_nothing_can():
    cfg = _cfg(kind="sd1", resolution=512, batch_size=1)
    assert fit_advice.suggest_settings(cfg, 80 * GB) == []
    assert fit_advice.suggest_settings(cfg, 0) == []
    assert fit_advice.suggest_settings(_cfg(kind="sdxl", resolution=1024), 1 * GB) == []



def test_after_running_out_of_memory_the_estimate_picks_the_nearest_settings_that_fit():
    cfg = _cfg(kind="sdxl", resolution=1024, batch_size=4, gradient_checkpointing=False, mixed_precision="bf16", base_weights="fp32")
    assert fit_advice.next_smaller_settings(cfg, 12 * GB) == fit_advice.suggest_settings(cfg, 12 * GB)[0]


@pytest.mark.parametrize("on_gpu", [True, False])
def test_where_the_estimate_cannot_help_each_failure_takes_one_step_down_the_ladder(on_gpu):
    # On a CPU, or when the estimate said it fit and the GPU disagreed (another program held memory):
    # following the fix after each failure walks the whole ladder and then says there is nothing left.
    cfg = _cfg(kind="sd1", resolution=768, batch_size=4, gradient_checkpointing=False, mixed_precision="bf16", base_weights="fp32")
    gpu = 80 * GB if on_gpu else 0  # on the GPU it "fits": the estimate has nothing to offer
    taken = []
    while (step := fit_advice.next_smaller_settings(cfg, gpu, on_gpu=on_gpu)) is not None:
        description, changes = step
        taken.append(description.split(" to ")[0].split(" (")[0])
        cfg = fit_advice.with_changes(cfg, changes)
        assert len(taken) < 20
    expected = ["turn on gradient checkpointing"]
    expected += ["store the base weights in bf16", "store the base weights in fp8"] if on_gpu else []
    expected += ["lower the batch size"] * 2 + ["lower the resolution"] * 4  # 640, 512, 384, 256
    assert taken == expected
    t = cfg.train
    assert (t.batch_size, t.gradient_accumulation, t.resolution, t.gradient_checkpointing) == (1, 4, 256, True)
    assert t.base_weights == ("fp8" if on_gpu else "fp32")  # a CPU is never pushed onto slow 16-bit weights

def test_dry_run_report_names_the_estimate_and_the_fixes():
    cfg = _cfg(kind="sdxl", resolution=1024, batch_size=2, gradient_checkpointing=False, base_weights="bf16", mixed_precision="bf16")
    text = fit_advice.dry_run_report(cfg, 8 * GB)
    assert "Memory estimate (sdxl, 1024 px, batch 2)" in text
    assert "does not fit" in text
    assert "train.gradient_checkpointing = True" in text
    assert "fits (" in fit_advice.dry_run_report(_cfg(kind="sd1", resolution=512), 24 * GB)


def test_dry_run_report_counts_the_optimizers_state():
    def part(optimizer):
        text = fit_advice.dry_run_report(_cfg(kind="sdxl", resolution=1024, optimizer=optimizer), 24 * GB)
        return text.split("lora+optimizer ")[1].split(",")[0]

    # SDXL attention at rank 16: 23.2 M LoRA parameters × 16 / 24 / 8.25 bytes.
    assert [part(o) for o in ("adamw", "prodigy", "adafactor")] == ["0.4 GB", "0.6 GB", "0.2 GB"]


def test_dry_run_report_names_the_network_and_its_parameters():
    def report(**network):
        return fit_advice.dry_run_report(_cfg(kind="sd1", resolution=512).replace(network=network), 24 * GB)

    assert "Network: LoRA, 3.19 M trainable parameters." in report()
    assert "Network: LoCon with DoRA, " in report(type="locon", dora=True)
    params = {t: float(report(type=t).split("Network: ")[1].split(", ")[1].split(" M")[0]) for t in ("lora", "locon", "loha", "lokr")}
    assert params["loha"] > params["locon"] > params["lora"] > params["lokr"]
    assert fit_advice.estimate_for_config(_cfg(kind="sd1").replace(network={"type": "loha"})).parts["lora+optimizer"] == \
        fit.network_params("sd1", 16, network_type="loha") * 16


def test_the_settings_tab_line_gives_the_verdict_and_the_nearest_fix():
    cfg = _cfg(kind="sdxl", resolution=1024, batch_size=2, gradient_checkpointing=False, base_weights="bf16", mixed_precision="bf16")
    summary = fit_advice.memory_summary(cfg, 8 * GB, "NVIDIA GeForce RTX 3070")
    assert summary.verdict == "does_not_fit"
    assert summary.text.startswith("Does not fit (≈ ") and " on NVIDIA GeForce RTX 3070. Nearest that fits: " in summary.text
    description, changes = summary.fix
    assert fit.fits(fit_advice.estimate_for_config(fit_advice.with_changes(cfg, changes)), 8 * GB)
    assert summary.fix == fit_advice.suggest_settings(cfg, 8 * GB)[0]  # the same first suggestion as --dry-run

    fits = fit_advice.memory_summary(_cfg(kind="sd1", resolution=512), 24 * GB, "NVIDIA GeForce RTX 4090")
    assert (fits.verdict, fits.fix) == ("fits", None) and fits.text.startswith("Fits (≈ ")
    cpu = fit_advice.memory_summary(_cfg(kind="sd1", resolution=512), 0)
    assert cpu.verdict == "cpu" and cpu.text.startswith("No NVIDIA GPU found: training would run on the CPU")


def test_a_nonstandard_model_gets_a_plain_no_estimate(tmp_path):
    import json
    import struct

    header = json.dumps({"model.diffusion_model.out.2.weight": {"dtype": "F16", "shape": [4, 32, 3, 3], "data_offsets": [0, 2304]}}).encode()
    f = tmp_path / "tiny.safetensors"
    f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 2304)
    cfg = Config().replace(model={"base": str(f), "kind": "sd1"}, train={"resolution": 512})
    summary = fit_advice.memory_summary(cfg, 8 * GB)
    assert summary.verdict == "unknown" and summary.text.startswith("No memory estimate: this base model is under 1 % of the size of ")
    assert fit_advice.dry_run_report(cfg, 0).startswith("Memory estimate: none: this base model is under 1 % of the size of ")
    assert fit_advice.suggest_settings(cfg.replace(train={"batch_size": 64}), 1 * GB) == []


def test_an_ema_on_the_gpu_costs_one_fp32_copy_of_the_lora_and_none_when_kept_on_the_cpu():
    cfg = _cfg(resolution=1024)
    plain = fit_advice.estimate_for_config(cfg).parts["lora+optimizer"]
    ema = fit_advice.estimate_for_config(cfg.replace(train={"ema": True})).parts["lora+optimizer"]
    on_cpu = fit_advice.estimate_for_config(cfg.replace(train={"ema": True, "ema_on_cpu": True})).parts["lora+optimizer"]
    assert ema - plain == 4 * fit.network_params("sdxl", 16)
    assert on_cpu == plain
