"""train.epochs: the engine trains exactly the steps the Settings tab's arithmetic (core/budget) shows."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from engine_fixtures import make_dataset, tiny_config
from safetensors import safe_open

from lora_studio.core import budget
from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.config import Config
from lora_studio.core.dataset import ImageItem
from lora_studio.engine.training import checkpoint
from lora_studio.engine.training.data import BatchPlan
from lora_studio.engine.training.loop import train

SHAPES = [(512, 512), (768, 384), (384, 768), (640, 480), (300, 900), (1000, 500)]


def random_items(rng: random.Random) -> list[ImageItem]:
    items = []
    for i in range(rng.randint(1, 40)):
        w, h = rng.choice(SHAPES)
        path = Path(f"/nowhere/{i}.png")  # BatchPlan only plans: it never opens the files
        items.append(ImageItem(path, f"{i}.png", "", False, path.with_suffix(".txt"), rng.choice([1, 1, 2, 3, 10]), w, h))
    return items


@pytest.mark.parametrize("seed", range(25))
def test_the_budget_counts_the_batches_batchplan_cuts(seed):
    rng = random.Random(seed)
    items = random_items(rng)
    world = rng.choice([1, 1, 2, 3])
    cfg = Config().replace(train={"batch_size": rng.randint(1, 6), "gradient_accumulation": rng.randint(1, 4),
                                  "epochs": rng.randint(1, 4), "seed": seed})
    plan = BatchPlan(items, cfg, world)
    b = budget.budget_for(cfg, items, world)
    assert b.batches_per_epoch == plan.batches_per_epoch
    # The first epoch, gathered from every process's micro-batches: each image exactly `repeats` times, in
    # exactly that many batches (too small a count would drop samples, too large one would fail to index).
    first_epoch: list[list[int]] = []
    for step in range(b.batches_per_epoch // (b.micro_per_step) + 1):
        for rank in range(world):
            first_epoch += [[s.item for s in batch] for batch in plan.micro_batches(step, rank) if batch[0].epoch == 0]
    assert len(first_epoch) == b.batches_per_epoch
    assert sorted(i for batch in first_epoch for i in batch) == sorted(i for i, it in enumerate(items) for _ in range(it.repeats))
    # And the epoch counter: every step in the epoch the budget says, the last in the last epoch.
    assert [plan.epoch_of_step(s) for s in range(b.steps)] == [budget.epoch_of_step(s + 1, b) for s in range(b.steps)]
    assert plan.epoch_of_step(b.steps - 1) == b.epochs == cfg.train.epochs


def test_a_run_set_in_epochs_trains_the_planned_steps(tiny_model_dir, tmp_path):
    # 3 square and 2 wide pictures in two buckets at batch 2: 2 + 1 batches per epoch, so 2 epochs are
    # 6 steps (the continuous count, ceil(10 / 2), would say 5).
    data = make_dataset(tmp_path / "data", n=5, sizes=((96, 96), (128, 64)))
    cfg = tiny_config(tiny_model_dir, data, tmp_path / "run",
                      dataset={"min_bucket_side": 64, "max_bucket_side": 128, "bucket_step": 32},
                      train={"epochs": 2, "max_steps": 1000, "resolution": 96})
    sink = ev.ListSink()
    finished = train(cfg, sink)
    assert finished.status == "completed" and finished.step == 6
    assert sink.of_type(ev.Started)[0].total_steps == 6
    assert any(s.message.startswith("2 epochs = 6 steps: 5 images") for s in sink.of_type(ev.Status))
    assert [(p.step, p.epoch) for p in sink.of_type(ev.Progress)] == [(2, 1), (4, 2), (6, 2)]
    state = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "run")[-1][1])[4]
    assert (state["step"], state["max_steps"], state["epoch"], state["num_epochs"]) == (6, 6, 2, 2)
    with safe_open(sink.of_type(ev.Exported)[0].path, "pt") as f:
        meta = f.metadata()
    assert (meta["ss_steps"], meta["ss_max_train_steps"], meta["ss_epoch"], meta["ss_num_epochs"]) == ("6", "6", "2", "2")
    # The run keeps `epochs`, so a resume works out the same end from the dataset.
    assert config_mod.load(tmp_path / "run" / "config.toml").train.epochs == 2
