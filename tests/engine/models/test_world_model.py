"""The shipped world model: a real SD1-architecture diffusers folder that diffusers loads offline, small,
convertible to a single file our loader accepts, and trained by tools/train_world_model.py (its record)."""

from __future__ import annotations

import json

import torch
from diffusers import StableDiffusionPipeline

from lora_studio.core.config import ModelConfig
from lora_studio.core.resources import resource
from lora_studio.engine.models import ldm_convert
from lora_studio.engine.models.load import load_models

WORLD = resource("models", "world")


def test_diffusers_loads_it_offline_and_it_draws_a_64_px_picture():
    pipe = StableDiffusionPipeline.from_pretrained(str(WORLD), local_files_only=True, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle on a blue background", num_inference_steps=4, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_it_is_small_and_its_training_is_recorded():
    size = sum(p.stat().st_size for p in WORLD.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, size
    record = json.loads((WORLD / "training.json").read_text())
    assert record["resolution"] >= 64 and record["unet_steps"] > 0
    assert 0.0 <= record["prompt_check"]["follows"] <= 1.0 and record["prompt_check"]["prompts"] == 50


def test_it_converts_to_a_single_file_that_our_loader_accepts(tmp_path):
    folder = load_models(ModelConfig(base=str(WORLD)), torch.float32)
    parts = {"unet": folder.unet, "vae": folder.vae, "text_encoder": folder.text_encoders[0]}
    path = ldm_convert.save_single_file(parts, "sd1", tmp_path / "world.safetensors", config_sidecar=True)
    single = load_models(ModelConfig(base=str(path)), torch.float32)
    assert single.kind == "sd1" and single.source == "file"
    for a, b in ((folder.unet, single.unet), (folder.vae, single.vae), (folder.text_encoders[0], single.text_encoders[0])):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
