"""A model's own tokenizer (issue 13, item 11): a single file whose `<stem>.config/` folder brings its
tokenizer trains with that tokenizer, and a tokenizer whose ids reach past its text encoder's embedding
table is refused at load time with a sentence naming the file and the fix (it used to crash the first
step with `IndexError: index out of range` inside the embedding)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from engine_fixtures import make_dataset, tiny_config, write_config

from lora_studio.core import events as ev
from lora_studio.core.config import ModelConfig
from lora_studio.core.errors import UserError
from lora_studio.core.resources import resource
from lora_studio.engine.models import ldm_convert, tiny
from lora_studio.engine.models.load import load_models

SMALL = 1000  # the vocabulary of the text encoders here: far below CLIP's 49,408
CAPTION = "tstyle, a watercolour of a lighthouse at dusk"


def write_small_tokenizer(folder, size: int = SMALL, pad: str | None = None, length: int | None = None):
    """The start of the CLIP vocabulary as a tokenizer of its own: the 512 byte tokens, the first merges
    (CLIP numbers each merge's result after the bytes, in merge order) and the start and end tokens as
    the last two ids. It tokenizes any text, in more, shorter pieces."""
    vocab = json.loads(resource("tokenizer", "vocab.json").read_text(encoding="utf-8"))
    merges = resource("tokenizer", "merges.txt").read_text(encoding="utf-8").splitlines()
    n_merges = size - 512 - 2
    kept = {token: i for token, i in vocab.items() if i < 512 + n_merges}
    assert all("".join(m.split()) in kept for m in merges[1 : 1 + n_merges])  # merges[0] is "#version"
    kept["<|startoftext|>"], kept["<|endoftext|>"] = size - 2, size - 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(kept), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merges[: 1 + n_merges]) + "\n", encoding="utf-8")
    if pad or length:
        (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": pad or "<|endoftext|>",
                                                                  "model_max_length": length or 77}))
    return folder


def small_single_file(tmp_path, kind: str = "sd1"):
    """A tiny single file whose text encoders know SMALL tokens, with its architecture configs beside it."""
    path = tmp_path / f"small-{kind}.safetensors"
    ldm_convert.save_single_file(tiny.build(kind, seed=1, vocab_size=SMALL), kind, path, config_sidecar=True)
    return path, tmp_path / f"small-{kind}.config"


def _encodes_within_the_embedding(models) -> None:
    for tokenizer, encoder in zip(models.tokenizers, models.text_encoders):
        ids = tokenizer(CAPTION, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        assert int(ids.max()) < encoder.get_input_embeddings().num_embeddings
        assert torch.isfinite(encoder(ids)[0]).all()


def test_a_sidecar_tokenizer_is_used_for_a_single_file(tmp_path):
    path, sidecar = small_single_file(tmp_path)
    write_small_tokenizer(sidecar / "tokenizer")
    models = load_models(ModelConfig(base=str(path)))
    assert len(models.tokenizers[0]) == SMALL
    assert models.tokenizers[0].model_max_length == 77  # vocab.json and merges.txt say no length: CLIP's
    assert "tokenizer: small-sd1.config/tokenizer (the model's own)" in models.notes
    _encodes_within_the_embedding(models)


def test_sdxl_takes_both_sidecar_tokenizers(tmp_path):
    path, sidecar = small_single_file(tmp_path, "sdxl")
    write_small_tokenizer(sidecar / "tokenizer")
    write_small_tokenizer(sidecar / "tokenizer_2", pad="!")  # OpenCLIP pads with "!", as SDXL's own files say
    models = load_models(ModelConfig(base=str(path)))
    assert [len(t) for t in models.tokenizers] == [SMALL, SMALL]
    assert models.tokenizers[1].pad_token == "!" and models.tokenizers[1].pad_token_id == 0
    _encodes_within_the_embedding(models)


def test_the_shared_tokenizer_on_a_smaller_text_encoder_is_refused_at_load(tmp_path):
    path, _ = small_single_file(tmp_path)
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(path)))
    assert e.value.code == "tokenizer_mismatch"
    assert e.value.message == ("The text encoder of small-sd1.safetensors knows 1,000 tokens, fewer than the 49,408 of "
                               "the standard CLIP tokenizer, so it needs the tokenizer it was trained with.")
    assert "small-sd1.config/tokenizer" in e.value.hint


def test_a_sidecar_tokenizer_too_big_for_its_text_encoder_is_refused(tmp_path):
    path, sidecar = small_single_file(tmp_path)
    shutil.copytree(resource("tokenizer"), sidecar / "tokenizer")  # the full CLIP vocabulary
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(path)))
    assert e.value.code == "tokenizer_mismatch"
    assert "small-sd1.config/tokenizer has 49,408 tokens, more than the 1,000" in e.value.message
    assert "small-sd1.safetensors" in e.value.message and "small-sd1.config/tokenizer" in e.value.hint


def test_a_sidecar_tokenizer_longer_than_its_text_encoder_is_refused(tmp_path):
    path, sidecar = small_single_file(tmp_path)
    write_small_tokenizer(sidecar / "tokenizer", length=100)
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(path)))
    assert e.value.code == "tokenizer_mismatch" and "cuts captions at 100 tokens" in e.value.message
    assert "reads at most 77" in e.value.message and "small-sd1.config/tokenizer/tokenizer_config.json" in e.value.hint


def test_a_diffusers_folder_whose_tokenizer_does_not_fit_is_refused(tmp_path):
    from diffusers import StableDiffusionPipeline

    parts = tiny.build("sd1", seed=1, vocab_size=SMALL)  # saved with the shared (too big) tokenizer
    StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False) \
        .save_pretrained(tmp_path / "small", safe_serialization=True)
    with pytest.raises(UserError) as e:
        load_models(ModelConfig(base=str(tmp_path / "small")))
    assert e.value.code == "tokenizer_mismatch" and "small/tokenizer has 49,408 tokens" in e.value.message

    shutil.rmtree(tmp_path / "small" / "tokenizer")
    write_small_tokenizer(tmp_path / "small" / "tokenizer")
    _encodes_within_the_embedding(load_models(ModelConfig(base=str(tmp_path / "small"))))


def test_a_single_file_with_its_own_tokenizer_trains(tmp_path):
    # The reliability trial's case end to end: before, the first step died of IndexError in the embedding.
    path, sidecar = small_single_file(tmp_path)
    write_small_tokenizer(sidecar / "tokenizer")
    data = make_dataset(tmp_path / "data" / "2_tstyle", n=2, sizes=((64, 64),))
    cfg = tiny_config(path, data, tmp_path / "run", train={"max_steps": 2}, network={"train_text_encoder": True})
    done = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(write_config(cfg, tmp_path / "run.toml"))],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    events = [ev.from_json(line) for line in done.stdout.splitlines()]
    assert events[-1].status == "completed"
    assert any(isinstance(e, ev.Status) and "small-sd1.config/tokenizer (the model's own)" in e.message for e in events)
