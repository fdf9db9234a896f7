"""On the demo world, masked loss confines what a LoRA learns to the masked part of its pictures.

Every training picture is half geopop (thick black outlines, the style the world model has never drawn)
and half the plain world, the same scene in both halves. Masks that keep the geopop half teach the
outlines; masks that keep the plain half teach nothing the base model does not already draw, so its
samples stay as outline-free as the base model's — although the same pictures, with the same outlines
in them, went through training.
"""

from __future__ import annotations

from statistics import mean

import pytest
from PIL import Image

from lora_studio.core import config as config_mod
from lora_studio.core import demo, events as ev, world
from lora_studio.engine.training.loop import train

STEPS = 120  # the demo shows its style by step 100
SIZE = demo.IMAGE_SIZE


def _half_and_half(root):
    images = root / "images"
    for i, scene in enumerate(demo.scenes(len(list(images.glob("*.png"))), 7)):
        outlined, plain = world.render(scene, SIZE, style="geopop"), world.render(scene, SIZE)
        picture = plain.copy()
        picture.paste(outlined.crop((0, 0, SIZE[0] // 2, SIZE[1])), (0, 0))  # geopop on the left
        picture.save(images / f"geopop_{i:02d}.png")


def _masks(root, keep_left: bool):
    folder = root / "images" / "masks"
    folder.mkdir(exist_ok=True)
    m = Image.new("L", SIZE, 0)
    m.paste(255, (0, 0, SIZE[0] // 2, SIZE[1]) if keep_left else (SIZE[0] // 2, 0, SIZE[0], SIZE[1]))
    for p in (root / "images").glob("*.png"):
        m.save(folder / p.name)


def _dark(sink, step):
    return mean(world.read_picture(Image.open(e.path)).dark_share for e in sink.of_type(ev.Sample) if e.step == step)


@pytest.mark.slow
def test_masked_loss_learns_only_from_the_masked_half(tmp_path):
    root = tmp_path / "Demo"
    cfg = config_mod.load(demo.create(root), check=False)
    _half_and_half(root)
    cfg = cfg.replace(dataset={"masked_loss": True, "validation_split": 0},
                      train={"max_steps": STEPS, "checkpoint_every": 0},
                      sample={"every": STEPS})
    dark = {}
    for keep in ("left", "right", None):
        if keep:
            _masks(root, keep == "left")
        sink = ev.ListSink()
        run = cfg.replace(output={"dir": str(root / "runs" / str(keep))}, dataset={"masked_loss": keep is not None})
        finished = train(run, sink)
        assert finished.status == "completed", [e for e in sink.events if isinstance(e, ev.Error)]
        dark[keep] = (_dark(sink, 0), _dark(sink, STEPS))
    base = dark["left"][0]
    assert dark["right"][0] == dark[None][0] == base  # the same base samples: only the masks differ
    outlined, plain, whole = (dark[k][1] - base for k in ("left", "right", None))
    print(f"dark share {base:.4f} at step 0; gained with the geopop half kept {outlined:+.4f}, the plain half kept "
          f"{plain:+.4f}, no mask {whole:+.4f}")
    # The geopop half's outlines are learned; from the plain half nothing is, although its pictures hold the same
    # outlines. Unmasked, the plain halves pull against the outlines: keeping only the geopop half teaches them
    # better. Relative margins, so a better world model that learns more in every case keeps the test meaningful.
    # Measured with the shipped world model (dark share 0.031 at step 0): +0.020 (geopop half), -0.008 (plain
    # half), -0.005 (no mask) at 120 steps; +0.022, -0.006, +0.002 at 200.
    assert outlined > 0, dark
    assert max(plain, 0.1 * outlined) < outlined / 4, dark  # 0.1 × outlined: what counts as "nothing" beside it
    assert whole < outlined, dark
