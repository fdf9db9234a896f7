"""The on-disk encoding cache: reused across runs of a project, invalidated by any change that matters."""

from __future__ import annotations

import torch
from engine_fixtures import make_dataset, tiny_config
from PIL import Image
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.engine.training import checkpoint
from lora_studio.engine.training.loop import train


def entries(project, kind):
    return sorted(p.name for p in (project / "cache" / kind).rglob("*.safetensors"))


def final_lora(run_dir):
    return load_file(checkpoint.list_checkpoints(run_dir)[-1][1] / "lora.safetensors")


def test_a_second_run_reuses_the_cache_and_trains_the_same(tiny_model_dir, tmp_path):
    project = tmp_path / "MyStyle"
    data = make_dataset(project / "images", n=3)
    first = tiny_config(tiny_model_dir, data, project / "runs" / "a", train={"max_steps": 2})
    train(first, ev.ListSink())
    latents, texts = entries(project, "latents"), entries(project, "text")
    assert len(latents) == 3 and len(texts) == 3

    second = first.replace(output={"dir": str(project / "runs" / "b")})
    train(second, ev.ListSink())
    assert entries(project, "latents") == latents and entries(project, "text") == texts
    a, b = final_lora(project / "runs" / "a"), final_lora(project / "runs" / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # A changed image and a changed caption get new entries; the artist's other images keep theirs.
    Image.new("RGB", (96, 96), (1, 2, 3)).save(data / "img_00.png")
    (data / "img_01.txt").write_text("tstyle, a different caption")
    third = first.replace(output={"dir": str(project / "runs" / "c")})
    train(third, ev.ListSink())
    assert len(entries(project, "latents")) == 4 and len(entries(project, "text")) == 4


def test_a_damaged_entry_is_recomputed(tiny_model_dir, tmp_path):
    project = tmp_path / "P"
    data = make_dataset(project / "images", n=2)
    cfg = tiny_config(tiny_model_dir, data, project / "runs" / "a", train={"max_steps": 1})
    train(cfg, ev.ListSink())
    victim = next((project / "cache" / "latents").rglob("*.safetensors"))
    victim.write_bytes(b"garbage")
    finished = train(cfg.replace(output={"dir": str(project / "runs" / "b")}), ev.ListSink())
    assert finished.status == "completed"
    assert load_file(victim)["latent"].shape[0] == 4
