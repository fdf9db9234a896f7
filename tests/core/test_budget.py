import pytest
from PIL import Image

from lora_studio.core.budget import (
    budget_from_epochs, budget_from_steps, describe, duration, epoch_of_step, epochs_done,
)
from lora_studio.core.config import DatasetConfig
from lora_studio.core.dataset import scan
from lora_studio.core.errors import UserError


def test_landscape_example_word_for_word():
    b = budget_from_epochs([10] * 120, epochs=8, batch_size=4)
    assert (b.images, b.samples_per_epoch, b.epochs, b.samples, b.steps) == (120, 1200, 8, 9600, 2400)
    assert describe(b) == "120 images × 10 repeats × 8 epochs = 9,600 samples = 2,400 steps at batch 4"
    assert describe(b, seconds_per_step=0.625) == (
        "120 images × 10 repeats × 8 epochs = 9,600 samples = 2,400 steps at batch 4, about 25 minutes"
    )


def test_steps_round_up_with_accumulation():
    b = budget_from_epochs([1] * 10, epochs=3, batch_size=4, grad_accum=2)
    assert b.samples == 30 and b.steps == 4  # ceil(30 / 8)
    assert "at batch 4 × 2 accumulated" in describe(b)


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
    b = budget_from_epochs([1] * 10, epochs=3, batch_size=4)  # 30 samples, 8 steps, the last one short
    assert b.steps == 8
    assert [epoch_of_step(s, b) for s in range(1, 9)] == [1, 1, 1, 2, 2, 3, 3, 3]
    assert epoch_of_step(0, b) == 1 and epoch_of_step(100, b) == 3
    assert epochs_done(5, b) == pytest.approx(2.0) and epochs_done(8, b) == pytest.approx(3.0)


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
