"""Regularisation pictures ([dataset.regularization]): the setting, the folder's scan, kohya's mix, the budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lora_studio.core import config as config_mod
from lora_studio.core.budget import budget_for, describe
from lora_studio.core.config import Config, DatasetConfig, RegularizationConfig
from lora_studio.core.dataset import ImageItem, regularization_epoch, scan, scan_regularization
from lora_studio.core.errors import ConfigError, UserError


def pictures(folder: Path, n: int, caption: str | None = "a picture", size=(64, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, ((60 * i) % 256, 100, 200)).save(folder / f"p{i:02d}.png")
        if caption is not None:
            (folder / f"p{i:02d}.txt").write_text(f"{caption} {i}", encoding="utf-8")
    return folder


def item(i: int, repeats: int = 1, reg: bool = False) -> ImageItem:
    return ImageItem(Path(f"/d/{i}.png"), f"{i}.png", "c", True, Path(f"/d/{i}.txt"), repeats, 64, 64, regularization=reg)


def test_the_table_reads_writes_and_checks_like_any_section(tmp_path):
    (tmp_path / "reg").mkdir()
    path = tmp_path / "cfg.toml"
    path.write_text('[dataset.regularization]\npath = "reg"\nrepeats = 2\nloss_weight = 0.5\n', encoding="utf-8")
    cfg = config_mod.load(path, check=False)
    assert cfg.dataset.regularization == RegularizationConfig(str((tmp_path / "reg").resolve()), 2, 0.5)
    assert cfg.get("dataset.regularization.loss_weight") == 0.5
    assert config_mod.key_info("dataset.regularization.path").label == "Regularisation folder"
    # A change of one key keeps the table's others; the file round-trips.
    changed = cfg.with_changes({"dataset.regularization.repeats": 3})
    assert changed.dataset.regularization == RegularizationConfig(cfg.dataset.regularization.path, 3, 0.5)
    assert config_mod.from_dict(config_mod.tomllib.loads(config_mod.dumps(changed)), check=False) == changed
    assert "[dataset.regularization]" in config_mod.dumps(changed)
    with pytest.raises(ConfigError) as e:
        config_mod.from_dict({"dataset": {"regularization": {"folder": "x", "loss_weight": -1}}})
    text = str(e.value)
    assert "dataset.regularization.folder is not a known setting" in text
    assert "dataset.regularization.loss_weight is -1.0; it must be between 0 and 100." in text
    with pytest.raises(ConfigError, match=r"dataset.regularization must be a table"):
        config_mod.from_dict({"dataset": {"regularization": "reg"}}, check=False)


def test_kohya_rule_as_many_regularisation_samples_as_training_samples():
    train = [item(i, repeats=10) for i in range(12)]  # 120 samples per epoch
    few = regularization_epoch(train, [item(100 + i, reg=True) for i in range(50)])
    assert len(few) == 50 and sum(x.repeats for x in few) == 120 and {x.repeats for x in few} == {2, 3}
    many = regularization_epoch(train, [item(100 + i, reg=True) for i in range(500)])
    assert len(many) == 120 and all(x.repeats == 1 for x in many)  # the rest are left out, in order
    assert [x.rel for x in many] == [f"{100 + i}.png" for i in range(120)]
    # A folder's own repeats are taken whole the first time round (so the count may pass the target).
    assert [x.repeats for x in regularization_epoch(train[:1], [item(200, 4, True), item(201, 4, True), item(202, 4, True)])] == [4, 4, 4]
    assert regularization_epoch(train, []) == []


def test_the_folder_scans_on_its_own_and_never_into_the_dataset(tmp_path):
    data = pictures(tmp_path / "images", 4, "tstyle, a circle")
    reg = pictures(data / "reg", 3, caption=None)  # inside the image folder, uncaptioned
    d = DatasetConfig(path=str(data), default_caption="tstyle", regularization=RegularizationConfig(str(reg), repeats=2))
    assert len(scan(d).items) == 4  # the regularisation pictures are not training images
    found = scan_regularization(d)
    assert [x.rel for x in found.items] == ["p00.png", "p01.png", "p02.png"]
    assert all(x.regularization and x.repeats == 2 for x in found.items)
    assert all(x.caption == "" for x in found.items)  # never the dataset's default caption (it holds the trigger)
    assert found.missing_captions == 3
    # Without the setting the folder is ordinary images again.
    assert len(scan(DatasetConfig(path=str(data))).items) == 7
    assert scan_regularization(DatasetConfig(path=str(data))) is None


def test_a_missing_or_empty_folder_says_which_setting_to_fix(tmp_path):
    missing = DatasetConfig(path=str(tmp_path), regularization=RegularizationConfig(str(tmp_path / "nope")))
    with pytest.raises(UserError) as e:
        scan_regularization(missing)
    assert e.value.code == "regularization_not_found"
    assert "point dataset.regularization.path at a folder of pictures, or empty it" in e.value.message
    assert "{dataset.regularization.path}" in e.value.template  # the app writes the label there
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as e:
        scan_regularization(DatasetConfig(path=str(tmp_path), regularization=RegularizationConfig(str(tmp_path / "empty"))))
    assert e.value.code == "empty_regularization"


def test_they_double_an_epoch_and_say_so(tmp_path):
    data = pictures(tmp_path / "images", 6)
    reg = pictures(tmp_path / "reg", 4)
    cfg = Config().replace(dataset={"path": str(data), "repeats": 2, "min_bucket_side": 64, "bucket_step": 64,
                                    "regularization": {"path": str(reg)}},
                           train={"epochs": 3, "batch_size": 2, "resolution": 64})
    b = budget_for(cfg, scan(cfg.dataset))  # the folder is scanned by the budget itself
    assert (b.images, b.regularization, b.samples_per_epoch, b.steps) == (6, 12, 24, 36)
    assert describe(b) == ("6 images × 2 repeats + 12 regularisation samples = 24 per epoch × 3 epochs = 72 samples "
                           "= 36 steps at batch 2")
    plain = budget_for(cfg.with_changes({"dataset.regularization.path": ""}), scan(cfg.dataset))
    assert (plain.regularization, plain.steps) == (0, 18)


def test_the_health_check_keeps_them_apart_and_checks_them(tmp_path):
    from lora_studio.core.doctor import check_dataset, check_regularization

    data = pictures(tmp_path / "images", 3, "tstyle, a circle")
    reg = pictures(data / "reg", 3, "a circle")
    (reg / "p01.txt").write_text("tstyle, a circle", encoding="utf-8")
    (reg / "broken.png").write_bytes(b"not a png")
    d = DatasetConfig(path=str(data), regularization=RegularizationConfig(str(reg)))
    main = check_dataset(d, 64, trigger="tstyle")
    assert not any("reg" in str(f.path.relative_to(data)) for f in main if f.path != data)  # nothing of the folder
    found = check_regularization(d, 64, trigger="tstyle")
    kinds = {f.kind: f for f in found}
    assert set(kinds) == {"unreadable", "reg_trigger"}
    assert kinds["unreadable"].message.startswith("reg/broken.png ") and kinds["unreadable"].fix == ""
    assert kinds["reg_trigger"].paths == (reg / "p01.png",)
    assert 'The trigger word "tstyle" is in 1 regularisation caption (reg/p01.png)' in kinds["reg_trigger"].message
    assert check_regularization(DatasetConfig(path=str(data)), 64) == []
