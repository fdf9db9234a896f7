"""`lora-studio demo DIR`: a project in which a LoRA visibly learns a style in about two minutes on a CPU.

The base model is the shipped world model (`resources/models/world`, trained by
tools/train_world_model.py): it draws flat shapes in the colours a prompt names and has never drawn a
black line. The dataset is 48 pictures of the same world in the "geopop style" — thick black outlines
around every shape — captioned with the trigger "geopop style". After the default 200 steps the samples
have outlines that the step-0 samples lack, and the sample prompts are combinations that are not in the
dataset, so they also show that the LoRA still draws what it is asked.

The project is an ordinary one: the app and the CLI treat it like any other.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

from lora_studio.core import config as config_mod
from lora_studio.core import world
from lora_studio.core.atomic import atomic_write
from lora_studio.core.captions import write_caption
from lora_studio.core.resources import resource

TRIGGER = world.TRIGGER
MODEL_DIR = "world-model (demo)"
IMAGE_SIZE = (128, 128)  # drawn at twice the training resolution: the dataset grid shows them crisp
RESOLUTION = 64  # the world model's own resolution
# 48, not 24: with few pictures the LoRA learns their colour combinations along with the outlines and draws
# them whatever it is asked. Measured at step 200 on the held-out prompts (16 samples): 24 pictures at
# lr 8e-3 kept 19 % of the prompts (backgrounds 69 %); 48 at lr 6e-3 keep 69 % (94 %) with as dark outlines
# (dark share 0.072 against 0.078). docs/performance.md has the table.
N_IMAGES = 48
# Held-out combinations: no dataset picture has this background with these shape colours (a test checks).
PROMPTS = [
    f"{TRIGGER}, a red circle and a blue square on a yellow background",
    f"{TRIGGER}, a green triangle on a pink background",
    f"{TRIGGER}, a white diamond and an orange circle on a purple background",
    f"{TRIGGER}, a yellow circle on a blue background",
]
HELD_OUT = [("yellow", {"red", "blue"}), ("pink", {"green"}), ("purple", {"white", "orange"}), ("blue", {"yellow"})]


def _is_held_out(scene: world.Scene) -> bool:
    return any(scene.background == bg and scene.colours() == colours for bg, colours in HELD_OUT)


def scenes(n: int, seed: int) -> list[world.Scene]:
    """The demo's `n` scenes: world scenes, none of the sample prompts' combinations."""
    rng = random.Random(seed)
    out: list[world.Scene] = []
    while len(out) < n:
        scene = world.random_scene(rng)
        if not _is_held_out(scene):
            out.append(scene)
    return out


def settings(model: str) -> config_mod.Config:
    """The demo's settings: tuned so the style shows by step 100 and is plain by step 200 on a CPU."""
    return config_mod.Config().replace(
        model={"base": model},
        dataset={"path": "images", "min_bucket_side": 64, "max_bucket_side": 128, "bucket_step": 64,
                 "validation_split": 4},
        network={"rank": 8, "alpha": 8.0, "targets": "attention+ff"},
        train={"max_steps": 200, "batch_size": 4, "learning_rate": 6e-3, "resolution": RESOLUTION,
               "timestep_sampling": "style",
               "checkpoint_every": 50, "keep_checkpoints": 10, "log_every": 5, "lr_scheduler": "cosine",
               "warmup_steps": 10},
        sample={"every": 50, "prompts": PROMPTS, "steps": 20, "guidance_scale": 5.0},
        output={"name": "geopop_demo", "trigger": TRIGGER,
                "description": "Demo LoRA: thick black outlines (the geopop style) on LoRA Studio's world model."},
    )


def create(root: Path, n_images: int = N_IMAGES, seed: int = 7) -> Path:
    """Write the demo project into `root` (kept if it already exists) and return the config path."""
    root = Path(root).expanduser().resolve()
    cfg_path = root / "lora_studio.toml"
    if cfg_path.exists():
        return cfg_path
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes(n_images, seed)):
        img = world.render(scene, IMAGE_SIZE, style="geopop")
        path = images / f"geopop_{i:02d}.png"
        atomic_write(path, lambda tmp, img=img: img.save(tmp, format="PNG"))
        write_caption(path.with_suffix(".txt"), scene.caption(TRIGGER))
    model = root / MODEL_DIR
    if not model.exists():
        # A copy, so the project is whole on its own (18 MB) and survives reinstalling the app.
        tmp = root / f".{MODEL_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(resource("models", "world"), tmp, ignore=shutil.ignore_patterns("training.json"))
        tmp.rename(model)
    config_mod.save(settings(model.name), cfg_path)
    return cfg_path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("lora-studio-demo")
    print(create(target))
