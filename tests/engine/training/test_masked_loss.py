"""Masked loss (dataset.masked_loss): the mask follows its image onto the latent grid and weights the loss there."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from engine_fixtures import make_dataset, tiny_config
from PIL import Image
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.engine.training import checkpoint, losses
from lora_studio.engine.training.data import latent_mask, load_for_training, load_with_mask
from lora_studio.engine.training.loop import ScriptedCommands, train


def run(cfg, commands=None, resume=False):
    sink = ev.ListSink()
    return train(cfg, sink, commands, resume=resume), sink


def final_lora(run_dir):
    step, path = checkpoint.list_checkpoints(run_dir)[-1]
    return step, load_file(path / "lora.safetensors")


def add_masks(root, keep=lambda w, h: (0, 0, w // 2, h)):
    """masks/<stem>.png for every image: white in the box `keep` gives, black elsewhere."""
    (root / "masks").mkdir(exist_ok=True)
    for p in sorted(root.glob("*.png")):
        with Image.open(p) as img:
            w, h = img.size
        m = Image.new("L", (w, h), 0)
        box = keep(w, h)
        if box:
            m.paste(255, box)
        m.save(root / "masks" / p.name)
    return root


@pytest.fixture(scope="module")
def masked_data(tmp_path_factory):
    return add_masks(make_dataset(tmp_path_factory.mktemp("data") / "10_tstyle", n=6))


def test_the_mask_takes_its_images_resize_crop_and_flip(tmp_path):
    # A picture whose brightness is its own mask (a soft-edged white block on black, off centre), wider than
    # its bucket so a random crop moves: after any crop and flip the mask must still be the picture's brightness.
    root = tmp_path / "data"
    (root / "masks").mkdir(parents=True)
    a = np.zeros((96, 160), np.float32)
    a[10:70, 20:70] = 255
    a[10:70, 70:76] = 128  # a grey edge
    Image.fromarray(a.astype(np.uint8)).convert("RGB").save(root / "pic.png")
    Image.fromarray(a.astype(np.uint8)).save(root / "masks" / "pic.png")
    [item] = scan(DatasetConfig(path=str(root), masked_loss=True)).items
    crops = set()
    for seed in range(6):
        flip = seed % 2 == 1
        rng, twin = random.Random(seed), random.Random(seed)
        px, orig, crop, mask = load_with_mask(item, (64, 64), flip=flip, random_crop=True, rng=rng)
        px2, _, crop2 = load_for_training(item, (64, 64), flip=flip, random_crop=True, rng=twin)
        assert crop == crop2 and torch.equal(px, px2) and rng.random() == twin.random()  # the mask costs no draws
        crops.add(crop)
        assert orig == (96, 160) and mask.shape == (1, 64, 64)
        assert torch.allclose(mask[0], (px[0] + 1) / 2, atol=1.5 / 255)
        grid = latent_mask(mask, (8, 8))
        assert grid.shape == (1, 8, 8)
        assert torch.allclose(grid, torch.nn.functional.avg_pool2d(mask[None], 8)[0])  # area average
        assert ((grid > 0.02) & (grid < 0.98)).any()  # the edges stay fractional
    assert len(crops) > 1
    assert torch.equal(latent_mask(None, (8, 8)), torch.ones(1, 8, 8))  # no mask: trains everywhere


def test_a_half_mask_is_normalised_by_what_it_keeps():
    train = SimpleNamespace(loss="mse")
    pred, target = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
    target[:, :, :, 4:] = 3.0  # the right half errs more
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :, :4] = 1.0  # image 0 keeps its left half; image 1 keeps nothing
    t = torch.zeros(2, dtype=torch.long)
    out = losses.per_image_loss(train, pred, target, t, torch.ones(1000), mask=mask)
    assert out.tolist() == [1.0, 0.0]  # the mean over the kept pixels, not half of it; a black mask gives 0
    assert torch.equal(losses.per_image_loss(train, pred, target, t, torch.ones(1000), mask=torch.ones(2, 1, 8, 8)),
                       losses.per_image_loss(train, pred, target, t, torch.ones(1000)))


def test_a_black_mask_teaches_nothing(tiny_model_dir, tmp_path, monkeypatch):
    data = add_masks(make_dataset(tmp_path / "data", n=4), keep=lambda w, h: None)  # every mask all black
    seen = []
    real = losses.per_image_loss

    def spy(train, pred, target, t, ac, mask=None):
        seen.append((tuple(pred.shape), None if mask is None else tuple(mask.shape)))
        return real(train, pred, target, t, ac, mask=mask)

    monkeypatch.setattr(losses, "per_image_loss", spy)
    # Random crops (not cached: the mask is made with each step's crop) and flips, weight decay off.
    sections = dict(dataset={"masked_loss": True, "random_crop": True, "flip": True}, train={"max_steps": 4, "weight_decay": 0.0})
    finished, _ = run(tiny_config(tiny_model_dir, data, tmp_path / "black", **sections))
    assert finished.status == "completed"
    assert seen and all(m == (p[0], 1, *p[2:]) for p, m in seen)  # [B, 1, h, w] on the latent grid
    _, black = final_lora(tmp_path / "black")
    assert all(torch.count_nonzero(v) == 0 for k, v in black.items() if "lora_B" in k)  # still its initial zeros
    seen.clear()
    run(tiny_config(tiny_model_dir, data, tmp_path / "plain", train={"max_steps": 4, "weight_decay": 0.0},
                    dataset={"random_crop": True, "flip": True}))
    assert seen and all(m is None for _, m in seen)  # off: no mask at all
    _, plain = final_lora(tmp_path / "plain")
    assert any(torch.count_nonzero(v) for k, v in plain.items() if "lora_B" in k)
    # Nothing moves at all: four black-masked steps leave the LoRA exactly as one does.
    run(tiny_config(tiny_model_dir, data, tmp_path / "one", **{**sections, "train": {"max_steps": 1, "weight_decay": 0.0}}))
    _, one = final_lora(tmp_path / "one")
    assert all(torch.equal(black[k], one[k]) for k in black)


def test_masks_are_cached_beside_the_latents_and_keyed_by_the_mask(tiny_model_dir, tmp_path):
    project = tmp_path / "MyStyle"
    data = add_masks(make_dataset(project / "images", n=3))

    def entries():
        return {p: load_file(p) for p in (project / "cache" / "latents").rglob("*.safetensors")}

    cfg = tiny_config(tiny_model_dir, data, project / "runs" / "a", train={"max_steps": 1}, dataset={"masked_loss": True})
    run(cfg)
    first = entries()
    assert len(first) == 3
    for e in first.values():
        assert e["mask"].shape == (1, *e["latent"].shape[-2:])
        w = e["mask"].shape[-1]
        assert e["mask"][..., : w // 2].min() > 0.98 and e["mask"][..., w // 2 :].max() < 0.02  # the left half trains (LANCZOS rings a little)
    run(cfg.replace(output={"dir": str(project / "runs" / "b")}))
    assert entries().keys() == first.keys()  # reused
    # One mask changed: one new entry. masked_loss off: entries of their own, without masks.
    Image.new("L", (96, 96), 255).save(data / "masks" / "img_00.png")
    run(cfg.replace(output={"dir": str(project / "runs" / "c")}))
    assert len(entries()) == 4
    run(cfg.replace(output={"dir": str(project / "runs" / "d")}, dataset={"masked_loss": False}))
    now = entries()
    assert len(now) == 7 and sum("mask" not in e for e in now.values()) == 3


def test_stop_then_resume_with_masked_loss_equals_a_straight_run(tiny_model_dir, masked_data, tmp_path):
    base = dict(train={"max_steps": 10, "checkpoint_every": 4, "lr_scheduler": "cosine", "warmup_steps": 2},
                dataset={"masked_loss": True, "flip": True})
    run(tiny_config(tiny_model_dir, masked_data, tmp_path / "straight", **base))
    split = tiny_config(tiny_model_dir, masked_data, tmp_path / "split", **base)
    first, _ = run(split, ScriptedCommands({7: ["stop"]}))
    assert first.status == "stopped" and first.step == 7
    resumed, sink = run(split, resume=True)
    assert sink.of_type(ev.Started)[0].start_step == 7 and resumed.step == 10
    (step_a, a), (step_b, b) = final_lora(tmp_path / "straight"), final_lora(tmp_path / "split")
    assert step_a == step_b == 10 and a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    # And masking changed what was learned.
    run(tiny_config(tiny_model_dir, masked_data, tmp_path / "unmasked", **{**base, "dataset": {"flip": True}}))
    _, c = final_lora(tmp_path / "unmasked")
    assert any(not torch.allclose(a[k], c[k], atol=1e-6) for k in a if "lora_B" in k)


def test_masked_loss_with_no_mask_anywhere_says_so(tiny_model_dir, tmp_path):
    data = make_dataset(tmp_path / "data" / "1_tstyle", n=2)
    cfg = tiny_config(tiny_model_dir, data, tmp_path / "run", train={"max_steps": 1}, dataset={"masked_loss": True})
    sink = ev.ListSink()
    assert train(cfg, sink).status == "completed"
    [warning] = [w for w in sink.of_type(ev.Warning) if w.code == "no_masks"]
    assert warning.message.startswith("dataset.masked_loss is on but no image has a mask")
