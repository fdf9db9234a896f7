"""Builders shared by the engine tests: small generated datasets and fast tiny-model configs."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from lora_studio.core import config as config_mod


def make_dataset(root: Path, n: int = 6, *, sizes=((96, 96), (128, 64)), captions: bool = True, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(img)
        d.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=tuple(rng.randrange(256) for _ in range(3)), outline=(0, 0, 0), width=4)
        img.save(root / f"img_{i:02d}.png")
        if captions:
            (root / f"img_{i:02d}.txt").write_text(f"tstyle, a circle, picture {i}", encoding="utf-8")
    return root


def tiny_config(model_dir: Path, data_dir: Path, run_dir: Path, **sections) -> config_mod.Config:
    """A valid config for a fast CPU run at 64 px (one bucket)."""
    cfg = config_mod.Config().replace(
        model={"base": str(model_dir)},
        dataset={"path": str(data_dir), "min_bucket_side": 64, "max_bucket_side": 128, "bucket_step": 64},
        network={"rank": 4, "alpha": 2.0},
        train={"max_steps": 6, "batch_size": 2, "learning_rate": 1e-3, "resolution": 64, "checkpoint_every": 0, "log_every": 2},
        sample={"every": 0, "prompts": [], "steps": 2},
        output={"dir": str(run_dir), "name": "tstyle"},
    )
    return cfg.replace(**sections) if sections else cfg


def write_config(cfg: config_mod.Config, path: Path) -> Path:
    config_mod.save(cfg, path)
    return path


def assert_lora_loads_changes_and_vanishes_at_zero(pipe, lora_file, size: int = 64) -> None:
    """What every UI does with the file, done by diffusers: load it, see the image change, and see the
    base image again at adapter weight 0."""
    import torch

    pipe.set_progress_bar_config(disable=True)

    def image():
        g = torch.Generator().manual_seed(0)
        return pipe("tstyle, a circle", num_inference_steps=2, height=size, width=size, generator=g, output_type="pt").images

    before = image()
    pipe.load_lora_weights(str(lora_file), adapter_name="style")  # raises on any key it cannot place
    changed = image()
    pipe.set_adapters(["style"], adapter_weights=[0.0])
    at_zero = image()
    assert (changed - before).abs().max() > 1e-3
    assert torch.allclose(at_zero, before, atol=1e-5)
