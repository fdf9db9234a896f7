"""Regularisation pictures in a run: mixed into the batches, weighted in the loss, counted in the steps, in the export."""

from __future__ import annotations

import json

import pytest
import torch
from engine_fixtures import make_dataset, tiny_config
from safetensors import safe_open

from lora_studio.core import events as ev
from lora_studio.core.errors import UserError
from lora_studio.engine.training import losses
from lora_studio.engine.training.data import Encodings
from lora_studio.engine.training.loop import train
from lora_studio.engine.training.step import Trainer


def test_a_run_mixes_weights_and_records_them(tiny_model_dir, tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "images", n=4)
    reg = make_dataset(tmp_path / "reg" / "1_circle", n=2, captions=False, seed=5)  # uncaptioned: "circle", kohya's class token
    batches, checked = [], []
    real_batch, real_loss, real_per_image = Encodings.batch, Trainer.loss, losses.per_image_loss
    per_image = []

    def spy_batch(self, slots):
        out = real_batch(self, slots)
        batches.append(out)
        return out

    def spy_per_image(*a, **kw):
        per_image.append(real_per_image(*a, **kw))
        return per_image[-1]

    def spy_loss(self, batch, noise, t, **kw):
        out = real_loss(self, batch, noise, t, **kw)
        checked.append(torch.allclose(out, (per_image[-1] * batch["loss_weight"]).mean()))
        return out

    monkeypatch.setattr(Encodings, "batch", spy_batch)
    monkeypatch.setattr(losses, "per_image_loss", spy_per_image)
    monkeypatch.setattr(Trainer, "loss", spy_loss)
    cfg = tiny_config(tiny_model_dir, data, tmp_path / "run",
                      dataset={"regularization": {"path": str(tmp_path / "reg"), "loss_weight": 0.25}},
                      train={"epochs": 2, "batch_size": 2})
    sink = ev.ListSink()
    finished = train(cfg, sink)
    assert finished.status == "completed"
    # 2 epochs of (4 images + 4 regularisation samples) at batch 2: twice the steps the images alone take.
    assert finished.step == 8 and sink.of_type(ev.Started)[0].total_steps == 8
    statuses = [s.message for s in sink.of_type(ev.Status)]
    assert "4 regularisation samples per epoch from 2 pictures, weighted 0.25" in statuses
    assert sink.of_type(ev.Started)[0].num_images == 4
    captions = [c for b in batches for c in b["captions"]]
    assert captions.count("circle") == 8 and len(captions) == 16  # both kinds, in the same batches
    weights = torch.cat([b["loss_weight"] for b in batches])
    assert sorted(set(weights.tolist())) == [0.25, 1.0]
    assert all(w == (0.25 if c == "circle" else 1.0) for w, c in zip(weights.tolist(), captions))
    assert checked and all(checked)  # each step's loss is the weighted mean
    [lora_file] = (tmp_path / "run").glob("*.safetensors")
    with safe_open(str(lora_file), "pt") as f:
        md = f.metadata()
    assert md["ss_num_reg_images"] == "2" and md["ss_num_train_images"] == "4"
    assert json.loads(md["ss_reg_dataset_dirs"]) == {"1_circle": {"n_repeats": 1, "img_count": 2}}


def test_without_regularisation_batches_carry_no_weights(tiny_model_dir, tmp_path, monkeypatch):
    seen = []
    real = Encodings.batch
    monkeypatch.setattr(Encodings, "batch", lambda self, slots: seen.append(real(self, slots)) or seen[-1])
    cfg = tiny_config(tiny_model_dir, make_dataset(tmp_path / "images", n=2), tmp_path / "run", train={"max_steps": 1})
    assert train(cfg, ev.ListSink()).status == "completed"
    assert seen and all("loss_weight" not in b for b in seen)
    [lora_file] = (tmp_path / "run").glob("*.safetensors")
    with safe_open(str(lora_file), "pt") as f:
        md = f.metadata()
    assert md["ss_num_reg_images"] == "0" and md["ss_reg_dataset_dirs"] == "{}"


def test_a_missing_folder_fails_before_the_model_loads(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, make_dataset(tmp_path / "images", n=2), tmp_path / "run",
                      dataset={"regularization": {"path": str(tmp_path / "gone")}})
    sink = ev.ListSink()
    with pytest.raises(UserError) as e:
        train(cfg, sink)
    assert e.value.code == "regularization_not_found"
    assert not any("Loading the base model" in s.message for s in sink.of_type(ev.Status))


def test_stop_then_resume_with_regularisation_equals_a_straight_run(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from lora_studio.engine.training import checkpoint
    from lora_studio.engine.training.loop import ScriptedCommands

    data = make_dataset(tmp_path / "images", n=4)
    reg = make_dataset(tmp_path / "reg", n=3, seed=9)
    base = dict(train={"max_steps": 10, "checkpoint_every": 4}, dataset={"regularization": {"path": str(reg), "loss_weight": 0.5}})
    train(tiny_config(tiny_model_dir, data, tmp_path / "straight", **base), ev.ListSink())
    split = tiny_config(tiny_model_dir, data, tmp_path / "split", **base)
    assert train(split, ev.ListSink(), ScriptedCommands({7: ["stop"]})).step == 7
    assert train(split, ev.ListSink(), resume=True).step == 10
    a, b = (load_file(checkpoint.list_checkpoints(tmp_path / r)[-1][1] / "lora.safetensors") for r in ("straight", "split"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
