"""The comparison grid rebuilds each network type from the checkpoint's state.json: at strength 1 a cell
is the run's own sample, at strength 0 the base model (DoRA included)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from engine_fixtures import make_dataset, tiny_config
from PIL import Image

from lora_studio.core import events as ev
from lora_studio.core import config as config_mod

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
NETWORKS = {
    "locon_dora": {"type": "locon", "dora": True, "conv_rank": 2, "conv_alpha": 1.0},
    "loha": {"type": "loha", "conv_rank": 2, "conv_alpha": 1.0},
    "lokr": {"type": "lokr", "factor": 4, "rank": 2},
}


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_grid_rebuilds_the_network_type_from_the_checkpoint(tiny_model_dir, tmp_path, name):
    from lora_studio.engine.training.loop import train

    data = make_dataset(tmp_path / "data" / "5_tstyle", n=2, sizes=((64, 64),))
    cfg = tiny_config(tiny_model_dir, data, tmp_path / "run", train={"max_steps": 2, "checkpoint_every": 2, "learning_rate": 2e-2},
                      network={"rank": 4, "alpha": 2.0, "train_text_encoder": True, "text_encoder_lr": 5e-3, **NETWORKS[name]},
                      sample={"prompts": ["tstyle, a circle"], "steps": 2, "every": 0}, output={"trigger": "tstyle"})
    assert train(cfg, ev.ListSink()).status == "completed"
    run_dir = tmp_path / "run"
    # The grid reads the network from state.json, not from the run's config: make the config say plain LoRA.
    config_mod.save(config_mod.load(run_dir / "config.toml", check=False).replace(network={"type": "lora", "dora": False}), run_dir / "config.toml")
    proc = subprocess.run([sys.executable, "-m", "lora_studio", "compare", str(run_dir), "--strengths", "1.0",
                           "--sampling-steps", "2", "--no-trigger-variants"], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cells = [e for e in (ev.from_json(line) for line in proc.stdout.splitlines() if line.strip()) if isinstance(e, ev.CompareCell)]
    by = {(c.step, c.strength): c.path for c in cells}
    assert np.array_equal(pixels(by[2, 1.0]), pixels(run_dir / "samples" / "step_000002_p0_s1234.png"))
    assert np.array_equal(pixels(by[0, 0.0]), pixels(run_dir / "samples" / "step_000000_p0_s1234.png"))
    assert np.abs(pixels(by[2, 1.0]) - pixels(by[0, 0.0])).max() > 0
