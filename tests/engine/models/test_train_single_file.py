"""Issue #3's acceptance: single-file SD1 and SDXL checkpoints train through `lora-studio train` offline,
and each export verifies itself and loads in diffusers, changing the image and vanishing at weight 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from engine_fixtures import assert_lora_loads_changes_and_vanishes_at_zero, make_dataset, tiny_config, write_config

from lora_studio.core import events as ev
from lora_studio.engine.models import ldm_convert, tiny


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "3_tstyle", n=4, sizes=((96, 96), (128, 64), (64, 128)))


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_single_file_checkpoint_trains_and_exports_a_loadable_lora(kind, dataset, tmp_path):
    model = ldm_convert.save_single_file(tiny.build(kind, seed=3), kind, tmp_path / f"tiny-{kind}.safetensors", config_sidecar=True)
    cfg = tiny_config(model, dataset, tmp_path / "run", train={"max_steps": 8, "learning_rate": 5e-3},
                      network={"train_text_encoder": True})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(write_config(cfg, tmp_path / "run.toml"))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "%|" not in done.stderr, done.stderr  # no library progress bars in the app's Log
    events = [ev.from_json(line) for line in done.stdout.splitlines()]
    started = next(e for e in events if isinstance(e, ev.Started))
    assert started.model_kind == kind
    exported = next(e for e in events if isinstance(e, ev.Exported))
    assert exported.verified, exported.problems

    assert_lora_loads_changes_and_vanishes_at_zero(tiny.pipeline(kind, seed=3), exported.path)
