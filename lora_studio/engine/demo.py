"""`lora-studio demo DIR`: a project anyone can train on a CPU in about a minute.

About 20 generated images in one recognisable style ("geopop": bold shapes with thick black outlines on
pastel grounds), captions with a trigger word, and a tiny built-in model labelled as a demo model — its
samples show the machinery working, not art. The project is an ordinary one: the app and the CLI treat
it like any other.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from lora_studio.core import config as config_mod
from lora_studio.core.atomic import atomic_write
from lora_studio.core.captions import write_caption

TRIGGER = "geopop style"
PASTELS = [(250, 228, 196), (205, 232, 229), (232, 214, 240), (255, 243, 176), (214, 234, 200)]
COLOURS = {"red": (220, 50, 47), "blue": (38, 110, 190), "yellow": (245, 190, 30), "green": (60, 160, 90), "purple": (130, 70, 170)}
SHAPES = ("circle", "square", "triangle")
SIZES = [(512, 512), (512, 512), (640, 384), (384, 640)]
PROMPTS = [f"{TRIGGER}, a red circle and a blue square", f"{TRIGGER}, a green triangle on a yellow background"]


def _draw(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str]:
    w, h = size
    ground = rng.choice(PASTELS)
    img = Image.new("RGB", size, ground)
    d = ImageDraw.Draw(img)
    found = []
    for _ in range(rng.randint(2, 3)):
        name, colour = rng.choice(list(COLOURS.items()))
        shape = rng.choice(SHAPES)
        r = rng.randint(min(w, h) // 8, min(w, h) // 4)
        x, y = rng.randint(r, w - r), rng.randint(r, h - r)
        box = (x - r, y - r, x + r, y + r)
        if shape == "circle":
            d.ellipse(box, fill=colour, outline=(0, 0, 0), width=10)
        elif shape == "square":
            d.rectangle(box, fill=colour, outline=(0, 0, 0), width=10)
        else:
            d.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=colour, outline=(0, 0, 0), width=10)
        found.append(f"a {name} {shape}")
    caption = f"{TRIGGER}, {', '.join(dict.fromkeys(found))}, flat colours, thick black outlines"
    return img, caption


def create(root: Path, n_images: int = 20, seed: int = 7) -> Path:
    """Write the demo project into `root` (kept if it already exists) and return the config path."""
    from lora_studio.engine.models import tiny

    root = Path(root).expanduser().resolve()
    cfg_path = root / "lora_studio.toml"
    if cfg_path.exists():
        return cfg_path
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n_images):
        img, caption = _draw(rng, SIZES[i % len(SIZES)])
        path = images / f"geopop_{i:02d}.png"
        atomic_write(path, lambda tmp, img=img: img.save(tmp, format="PNG"))
        write_caption(path.with_suffix(".txt"), caption)
    model = root / "demo-model (tiny, not for art)"
    if not model.exists():
        tiny.save_diffusers(model, "sd1")
    cfg = config_mod.Config()
    cfg = cfg.replace(
        model={"base": model.name},
        dataset={"path": "images", "min_bucket_side": 64, "max_bucket_side": 256, "bucket_step": 64, "flip": True},
        network={"rank": 8, "alpha": 8.0},
        train={"max_steps": 200, "batch_size": 2, "learning_rate": 1e-3, "resolution": tiny.TINY_RESOLUTION * 2,
               "checkpoint_every": 50, "log_every": 5, "lr_scheduler": "cosine", "warmup_steps": 10},
        sample={"every": 50, "prompts": PROMPTS, "steps": 12, "guidance_scale": 5.0},
        output={"name": "geopop_demo", "trigger": TRIGGER,
                "description": "Demo LoRA trained on the tiny built-in demo model: it shows the machinery, not art."},
    )
    config_mod.save(cfg, cfg_path)
    return cfg_path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("lora-studio-demo")
    print(create(target))
