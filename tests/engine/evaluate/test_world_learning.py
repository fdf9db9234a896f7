"""On the demo world, a LoRA visibly learns the geopop style — and the scores see it.

The demo project (the shipped world model, 48 geopop pictures) trains through the engine as an artist's
run does. The world has a ground truth the scores do not use: `world.read_picture` counts black pixels
(the base world has none) and reads back the colours drawn, so the test can check the style score and
the recommendation against what is really in the pictures.
"""

from __future__ import annotations

import random
from statistics import mean

import pytest
import torch
from PIL import Image

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core import world
from lora_studio.core import demo
from lora_studio.engine.evaluate import rank, style
from lora_studio.engine.training.loop import train

STEPS = 200  # the demo's own length
# Every checkpoint's style score, on the 0 (base) .. 1 (training set) line. Measured 0.41 / 0.36 / 0.24 /
# 0.27 at steps 50-200 with the shipped world model, whose own samples are still blotchy (its training.json).
STYLE_MARGIN = 0.2


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "Demo"
    cfg = config_mod.load(demo.create(root), check=False)
    cfg = cfg.replace(train={"max_steps": STEPS}, output={"dir": str(root / "runs" / "test")})
    sink = ev.ListSink()
    finished = train(cfg, sink)
    assert finished.status == "completed", [e for e in sink.events if isinstance(e, ev.Error)]
    return cfg, sink


def _samples(sink, step):
    return [Image.open(e.path) for e in sink.of_type(ev.Sample) if e.step == step]


def test_outlines_appear_where_the_base_model_draws_none(demo_run):
    cfg, sink = demo_run
    before = [world.read_picture(img).dark_share for img in _samples(sink, 0)]
    after = [world.read_picture(img).dark_share for img in _samples(sink, STEPS)]
    rises = [a - b for a, b in zip(after, before)]
    # Measured per prompt: 0.001 -> 0.114 (outlines around every shape), 0.124 -> 0.114 (the base already
    # draws a dark-green blob there), 0.0 -> 0.01, 0.0 -> 0.0. The weak base model limits the rest.
    assert max(rises) > 0.08, (before, after)
    assert mean(after) > mean(before), (before, after)


def test_the_style_score_rises_past_the_margin_and_a_checkpoint_is_recommended(demo_run):
    cfg, sink = demo_run
    (ranking,) = sink.of_type(ev.Ranking)
    scores = {s["step"]: s for s in ranking.scores}
    assert set(scores) == {50, 100, 150, STEPS}
    assert all(s["style"] > STYLE_MARGIN for s in scores.values()), scores
    # Each checkpoint still tells its four prompts apart better than chance (0.25), the last ones clearly.
    # Measured on the world model of 4,000 more steps: 0.5 at step 50, 0.75 at 150 and 200.
    assert all(s["prompts"] > 0.25 for s in scores.values()), scores
    assert scores[STEPS]["prompts"] >= 0.75, scores
    assert ranking.step in scores and ranking.sentence.startswith(f"Step {ranking.step}"), ranking.sentence
    assert rank.load_ranking(cfg.output.dir).step == ranking.step
    validation = sink.of_type(ev.Validation)
    assert [v.step for v in validation] == [0, 50, 100, 150, STEPS]
    assert validation[-1].loss < validation[0].loss  # the held-out geopop pictures are learned too


def test_dataset_pictures_score_far_above_base_samples_on_pictures_the_scale_never_saw(demo_run):
    cfg, _ = demo_run
    from lora_studio.engine.models.load import load_models

    models = load_models(cfg.model, torch.float32)
    from lora_studio.engine.training import sampling

    pipe = sampling.build_pipeline(models, models.unet, models.text_encoders)
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(5)
    scenes = [world.random_scene(rng) for _ in range(16)]
    base = [pipe(s.caption(), num_inference_steps=12, guidance_scale=5.0, height=64, width=64,
                 generator=torch.Generator().manual_seed(i)).images[0] for i, s in enumerate(scenes)]
    geopop = [world.render(s, (64, 64), style="geopop") for s in scenes]
    scale = style.style_scale(models.vae, base[:8], geopop[:8], 64)
    held_base = style.style_scores(models.vae, scale, base[8:], 64)
    held_geopop = style.style_scores(models.vae, scale, geopop[8:], 64)
    # Measured: geopop 0.64 on average, base samples -0.3 on average (the line is fitted on 8 of each).
    assert mean(held_geopop) > 0.45 and mean(held_base) < 0.1, (held_base, held_geopop)
    assert mean(held_geopop) - mean(held_base) > 0.6
