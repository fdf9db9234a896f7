from dataclasses import dataclass

import pytest
from PIL import Image

from lora_studio.core.buckets import make_buckets
from lora_studio.core.budget import (
    budget_for, budget_from_epochs, budget_from_steps, describe, duration, epoch_of_step, epochs_done,
)
from lora_studio.core.config import Config, DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.core.errors import UserError


def test_landscape_example_word_for_word():
    b = budget_from_epochs([10] * 120, epochs=8, batch_size=4)
    assert (b.images, b.samples_per_epoch, b.epochs, b.samples, b.steps) == (120, 1200, 8, 9600, 2400)
    assert describe(b) == "120 images × 10 repeats × 8 epochs = 9,600 samples = 2,400 steps at batch 4"
    assert describe(b, seconds_per_step=0.625) == (
        "120 images × 10 repeats × 8 epochs = 9,600 samples = 2,400 steps at batch 4, about 25 minutes"
    )


@dataclass
class Img:  # what the budget reads of an ImageItem
    width: int
    height: int
    repeats: int = 1


SQUARE, WIDE = (512, 512), (768, 384)  # two buckets at 512: (512, 512) and (704, 320)


def images(n_square: int, n_wide: int, repeats: int = 1) -> list[Img]:
    return [Img(*SQUARE, repeats)] * n_square + [Img(*WIDE, repeats)] * n_wide


def test_steps_round_up_with_accumulation():
    b = budget_from_epochs([1] * 10, epochs=3, batch_size=4, grad_accum=2)
    # Each epoch is cut 4 + 4 + 2 (an epoch ends in a short batch): 9 batches, 2 per step.
    assert (b.samples, b.batches_per_epoch, b.steps) == (30, 3, 5)
    assert describe(b) == (
        "10 images × 1 repeat × 3 epochs = 30 samples = 5 steps at batch 4 × 2 accumulated (3 batches per epoch, the last one short)"
    )


def test_each_bucket_ends_in_its_own_short_batch():
    buckets = make_buckets(512)
    b = budget_from_epochs(images(3, 3), epochs=5, batch_size=2, buckets=buckets)
    # 3 squares → 2 + 1, 3 wide → 2 + 1: 4 batches per epoch, not ceil(6 / 2) = 3.
    assert (b.shapes, b.batches_per_epoch, b.steps, b.samples) == (2, 4, 20, 30)
    assert describe(b) == (
        "6 images × 1 repeat × 5 epochs = 30 samples = 20 steps at batch 2 "
        "(4 batches per epoch: 2 image shapes, each batched on its own)"
    )
    # Without sizes (or without bucket settings) all images share one bucket: the fewest batches possible.
    assert budget_from_epochs(images(3, 3), epochs=5, batch_size=2).steps == 15
    assert budget_from_epochs([1] * 6, epochs=5, batch_size=2, buckets=buckets).steps == 15
    # Buckets that fill their batches exactly need no note.
    assert "batches per epoch" not in describe(budget_from_epochs(images(4, 2), epochs=1, batch_size=2, buckets=buckets))


def test_steps_set_in_steps_with_buckets():
    b = budget_from_steps(images(3, 3), max_steps=10, batch_size=2, buckets=make_buckets(512))
    assert (b.epochs, b.exact_epochs) == (3, 2.5)  # 10 of 4 batches per epoch; step 10 is in epoch 3
    # Half an epoch is 2 of the 4 batches, full or short in a shuffled order: the samples are approximate.
    assert not b.samples_exact and b.samples == 15
    assert describe(b) == (
        "10 steps at batch 2 (4 batches per epoch: 2 image shapes, each batched on its own) ≈ 15 samples "
        "≈ 2.5 epochs of 6 images × 1 repeat"
    )


def test_a_step_takes_accumulation_times_processes_batches():
    buckets = make_buckets(512)
    b = budget_from_epochs(images(3, 3), epochs=5, batch_size=2, grad_accum=3, buckets=buckets, world_size=2)
    assert b.micro_per_step == 6 and b.steps == 4  # ceil(5 × 4 / 6)
    # The last step runs a batch into a sixth epoch; it still counts as the fifth, as the engine counts it.
    assert [epoch_of_step(s, b) for s in range(1, 5)] == [1, 2, 4, 5]
    assert epochs_done(4, b) == 5


def test_budget_for_a_config():
    cfg = Config().replace(train={"batch_size": 2, "max_steps": 10, "resolution": 512})
    items = images(3, 3)
    assert budget_for(cfg, items).steps == 10
    by_epochs = cfg.replace(train={"epochs": 5})
    assert budget_for(by_epochs, items) == budget_from_epochs(items, 5, 2, buckets=make_buckets(512))
    assert budget_for(by_epochs, items).steps == 20
    # Adding images keeps "5 epochs" 5 epochs: the steps follow the dataset.
    assert budget_for(by_epochs, items + images(2, 0)).steps == 25  # 5 squares: 2 + 2 + 1
    assert budget_for(by_epochs.replace(train={"gradient_accumulation": 2}), items, world_size=2).steps == 5


def test_singulars():
    b = budget_from_epochs([1], epochs=1, batch_size=1)
    assert describe(b) == "1 image × 1 repeat × 1 epoch = 1 sample = 1 step at batch 1"


def test_mixed_repeats():
    b = budget_from_epochs([1] * 100 + [10] * 20, epochs=8, batch_size=4)
    assert b.samples_per_epoch == 300
    assert describe(b) == (
        "120 images (× 1–10 repeats) = 300 per epoch × 8 epochs = 2,400 samples = 600 steps at batch 4"
    )


def test_budget_from_steps():
    b = budget_from_steps([10] * 120, max_steps=1500, batch_size=4)
    assert (b.steps, b.samples, b.epochs) == (1500, 6000, 5)
    # Whole epochs read as the epoch sentence, whichever way the budget was set.
    assert describe(b) == "120 images × 10 repeats × 5 epochs = 6,000 samples = 1,500 steps at batch 4"
    partial = budget_from_steps([1] * 120, max_steps=1500, batch_size=1)
    assert partial.epochs == 13 and partial.exact_epochs == pytest.approx(12.5)
    assert describe(partial) == "1,500 steps at batch 1 = 1,500 samples ≈ 12.5 epochs of 120 images × 1 repeat"


def test_from_a_scan_and_from_dataset_dirs(tmp_path):
    for folder, n in (("10_a", 3), ("2_b", 2)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / folder / f"{i}.png")
    result = scan(DatasetConfig(path=str(tmp_path)))
    from_scan = budget_from_epochs(result, epochs=2, batch_size=2)
    assert from_scan.samples_per_epoch == 34 and from_scan.steps == 34
    assert budget_from_epochs(result.dataset_dirs(), epochs=2, batch_size=2) == from_scan
    assert budget_from_epochs(result.items, epochs=2, batch_size=2) == from_scan


def test_epoch_of_step_matches_the_arithmetic():
    b = budget_from_epochs([1] * 10, epochs=3, batch_size=4)  # 30 samples, 3 batches (4 + 4 + 2) per epoch
    assert b.steps == 9
    assert [epoch_of_step(s, b) for s in range(1, 10)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert epoch_of_step(0, b) == 1 and epoch_of_step(100, b) == 3
    assert epochs_done(6, b) == pytest.approx(2.0) and epochs_done(9, b) == pytest.approx(3.0)


def test_durations():
    assert duration(20) == "under a minute"
    assert duration(90) == "about 2 minutes"
    assert duration(60) == "about 1 minute"
    assert duration(3600 + 22 * 60) == "about 1 hour 20 minutes"
    assert duration(2 * 3600 + 60) == "about 2 hours"
    assert duration(15 * 3600) == "about 15 hours"


def test_errors():
    with pytest.raises(UserError) as e:
        budget_from_steps([], max_steps=10, batch_size=1)
    assert e.value.code == "empty_dataset"
    with pytest.raises(UserError):
        budget_from_epochs([1], epochs=1, batch_size=0)
