"""The SDXL presets of issue #12 train as they are (only the size and length made tiny): their optimizer,
schedule, accumulation, fp8 storage, tag shuffling, v-prediction and zero terminal SNR work together."""

from __future__ import annotations

import pytest
from engine_fixtures import make_dataset, tiny_config

from lora_studio.core import events as ev
from lora_studio.core.presets import apply_preset
from lora_studio.engine.models import ldm_convert, tiny
from lora_studio.engine.training.loop import train

TINY = {"train.resolution": 64, "train.max_steps": 2, "train.warmup_steps": 1, "train.checkpoint_every": 0,
        "dataset.min_bucket_side": 64, "dataset.max_bucket_side": 128, "dataset.bucket_step": 64, "sample.every": 0}


@pytest.fixture(scope="module")
def sdxl_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    parts = tiny.build("sdxl", seed=3)
    return {"eps": ldm_convert.save_single_file(parts, "sdxl", root / "illustrious.safetensors", config_sidecar=True),
            # A v-pred file that lost its markers in a merge: the preset alone makes it v with zero terminal SNR.
            "v": ldm_convert.save_single_file(parts, "sdxl", root / "merged-vpred.safetensors", metadata={}, config_sidecar=True)}


@pytest.mark.parametrize("preset, model", [
    ("style-sdxl-illustrious", "eps"), ("style-sdxl-noobai-vpred", "v"), ("style-sdxl-8gb", "eps"),
])
def test_the_preset_trains_on_a_tiny_sdxl_file(preset, model, sdxl_files, tmp_path):
    data = make_dataset(tmp_path / "data" / "2_tstyle", n=2, sizes=((64, 64),))
    cfg = apply_preset(tiny_config(sdxl_files[model], data, tmp_path / "run"), preset).with_changes(TINY)
    sink = ev.ListSink()
    finished = train(cfg, sink)
    assert finished.status == "completed", [e for e in sink.events if isinstance(e, (ev.Error, ev.Warning))]
    exported = sink.of_type(ev.Exported)[0]
    assert exported.verified, exported.problems
    statuses = " | ".join(s.message for s in sink.of_type(ev.Status))
    if preset == "style-sdxl-noobai-vpred":
        assert sink.of_type(ev.Started)[0].prediction == "v"
        assert "v-prediction (from model.prediction) with zero terminal SNR (from train.zero_terminal_snr)" in statuses
    else:
        assert sink.of_type(ev.Started)[0].prediction == "epsilon" and "zero terminal SNR" not in statuses
