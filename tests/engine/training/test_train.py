"""Training runs on tiny real models, in-process through `train()` with a list sink."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import make_dataset, tiny_config
from PIL import Image
from safetensors.torch import load_file

from lora_studio.core import events as ev
from lora_studio.engine.training import checkpoint
from lora_studio.engine.training.loop import ScriptedCommands, train


def run(cfg, commands=None, resume=False):
    sink = ev.ListSink()
    finished = train(cfg, sink, commands, resume=resume)
    return finished, sink


def final_lora(run_dir):
    step, path = checkpoint.list_checkpoints(run_dir)[-1]
    return step, load_file(path / "lora.safetensors")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "10_tstyle", n=6)


def test_a_run_emits_the_protocol_and_exports(tiny_model_dir, dataset, tmp_path):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", sample={"every": 3, "prompts": ["tstyle, a circle"], "steps": 2})
    finished, sink = run(cfg)
    assert finished.status == "completed" and finished.step == 6
    started = sink.of_type(ev.Started)[0]
    assert (started.total_steps, started.model_kind, started.prediction, started.num_images) == (6, "sd1", "epsilon", 6)
    progress = sink.of_type(ev.Progress)
    assert [p.step for p in progress] == [2, 4, 6]
    assert all(p.loss > 0 and p.samples_per_s > 0 for p in progress)
    assert progress[0].epoch == 1
    samples = sink.of_type(ev.Sample)
    assert [s.step for s in samples] == [0, 3, 6]  # a step-0 baseline, every 3, and the final result
    assert all(Image.open(s.path).size == (64, 64) for s in samples)
    exported = sink.of_type(ev.Exported)[0]
    assert exported.path.endswith("tstyle.safetensors") and exported.verified, exported.problems
    assert (tmp_path / "run" / "config.toml").exists()
    # 10_tstyle: 6 images x 10 repeats = 60 samples per epoch = 30 steps at batch 2, so 6 steps is epoch 1.
    assert sink.events[-1] == finished


def _has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install fails in its own ways (ImportError, RuntimeError)
        return False
    return True


# The test extra installs bitsandbytes >= 0.50, whose 8-bit optimizers also run on the CPU.
NEEDS_BNB = pytest.mark.skipif(not _has_bitsandbytes(), reason="the 8-bit optimizers need bitsandbytes (the test extra)")


@pytest.mark.parametrize("optimizer", [
    "adamw", "prodigy", "adafactor", "lion", "came", "adamw_schedulefree",
    pytest.param("adamw8bit", marks=NEEDS_BNB), pytest.param("lion8bit", marks=NEEDS_BNB),
])
def test_stop_then_resume_equals_a_straight_run(tiny_model_dir, dataset, tmp_path, optimizer, extra=None):
    # Schedule-free has no schedule (its warm-up is its own); Prodigy's learning rate is a multiplier of the one it finds.
    schedule = "constant" if optimizer == "adamw_schedulefree" else "cosine"
    lr = 1.0 if optimizer == "prodigy" else 1e-3
    base = dict(train={"max_steps": 10, "checkpoint_every": 4, "lr_scheduler": schedule, "warmup_steps": 2,
                       "optimizer": optimizer, "learning_rate": lr, **(extra or {})})
    straight = tiny_config(tiny_model_dir, dataset, tmp_path / "straight", **base)
    run(straight)
    split = tiny_config(tiny_model_dir, dataset, tmp_path / "split", **base)
    first, _ = run(split, ScriptedCommands({7: ["stop"]}))
    assert first.status == "stopped" and first.step == 7
    assert checkpoint.list_checkpoints(tmp_path / "split")[-1][0] == 7
    resumed, sink = run(split, resume=True)
    assert sink.of_type(ev.Started)[0].start_step == 7
    assert resumed.status == "completed" and resumed.step == 10
    step_a, a = final_lora(tmp_path / "straight")
    step_b, b = final_lora(tmp_path / "split")
    assert step_a == step_b == 10 and a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if "lora_B" in k)


# The EMA of the LoRA (train.ema): the checkpoint's LoRA file is the average, ema.pt the rest; on the GPU's side or
# the computer's, and over schedule-free's averaged weights.
@pytest.mark.parametrize("optimizer, extra", [
    ("adamw", {"ema": True, "ema_decay": 0.9}),
    ("adamw", {"ema": True, "ema_decay": 0.9, "ema_on_cpu": True}),
    ("adamw_schedulefree", {"ema": True, "ema_decay": 0.9}),
])
def test_stop_then_resume_with_ema_equals_a_straight_run(tiny_model_dir, dataset, tmp_path, optimizer, extra):
    test_stop_then_resume_equals_a_straight_run(tiny_model_dir, dataset, tmp_path, optimizer, extra)
    assert (checkpoint.list_checkpoints(tmp_path / "split")[-1][1] / checkpoint.EMA).exists()


def test_sampling_leaves_training_untouched(tiny_model_dir, dataset, tmp_path):
    plain = tiny_config(tiny_model_dir, dataset, tmp_path / "plain")
    sampled = tiny_config(tiny_model_dir, dataset, tmp_path / "sampled", sample={"every": 2, "prompts": ["tstyle"], "steps": 2})
    run(plain)
    run(sampled)
    _, a = final_lora(tmp_path / "plain")
    _, b = final_lora(tmp_path / "sampled")
    assert all(torch.equal(a[k], b[k]) for k in a)



def test_running_out_of_memory_while_sampling_skips_the_samples_not_the_run(tiny_model_dir, dataset, tmp_path, monkeypatch):
    # A GPU running out of memory while sampling (diffusers' pipeline raising torch's error, as it does on
    # an 8 GB card at a large sample size), at step 2 only. This machine has no GPU to fill, so the
    # pipeline is made to raise it; everything of ours runs for real.
    from diffusers import StableDiffusionPipeline

    real_call, calls = StableDiffusionPipeline.__call__, []

    def call(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", call)
    plain = tiny_config(tiny_model_dir, dataset, tmp_path / "plain")
    sampled = tiny_config(tiny_model_dir, dataset, tmp_path / "sampled", sample={"every": 2, "prompts": ["tstyle"], "steps": 2})
    run(plain)
    finished, sink = run(sampled)
    assert finished.status == "completed" and finished.step == 6
    assert [s.step for s in sink.of_type(ev.Sample)] == [0, 4, 6]  # step 2's samples skipped, the rest made
    warning = [w for w in sink.of_type(ev.Warning) if w.code == "sample_out_of_memory"]
    assert len(warning) == 1 and warning[0].message.startswith("The sample images at step 2 were skipped: the GPU ran out")
    assert sink.of_type(ev.Exported)[0].verified
    _, a = final_lora(tmp_path / "plain")
    _, b = final_lora(tmp_path / "sampled")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the failed sampling left training exactly as it was


def test_an_image_too_big_for_the_vae_is_encoded_in_tiles(tiny_model_dir, dataset, tmp_path, monkeypatch):
    # The fp32 VAE encode is caching's memory peak (SDXL at 1024 px on a 6 GB card). This machine has no
    # GPU to fill, so diffusers' encoder raises torch's GPU error whenever it is asked for a whole image;
    # our fallback then switches diffusers' tiled VAE on, and the tiled encoding really runs.
    from diffusers import AutoencoderKL

    real_encode, whole_attempts = AutoencoderKL.encode, []

    def encode(self, x, *args, **kwargs):
        if not self.use_tiling:
            whole_attempts.append(tuple(x.shape))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB")
        return real_encode(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", encode)
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"resolution": 128, "max_steps": 2},
                      dataset={"min_bucket_side": 64, "max_bucket_side": 256})
    finished, sink = run(cfg)
    assert finished.status == "completed" and len(whole_attempts) == 1  # tiles from the first failure on
    warnings = [w for w in sink.of_type(ev.Warning) if w.code == "vae_tiled"]
    assert len(warnings) == 1 and "encoded in tiles" in warnings[0].message
    assert sink.of_type(ev.Exported)[0].verified

def test_a_rerun_without_resume_is_refused_and_loses_nothing(tiny_model_dir, dataset, tmp_path):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run")
    run(cfg)
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    from lora_studio.core.errors import UserError

    with pytest.raises(UserError) as e:
        run(cfg)
    assert e.value.code == "run_exists" and "--resume" in e.value.hint
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before


@pytest.mark.parametrize(
    "sections",
    [
        dict(train={"min_snr_gamma": 5.0, "noise_offset": 0.05, "gradient_accumulation": 2, "lr_scheduler": "linear"}),
        dict(dataset={"shuffle_tags": True, "keep_tokens": 1, "caption_dropout": 0.2, "flip": True, "random_crop": True}),
        dict(network={"train_text_encoder": True, "targets": "attention+ff"}, train={"gradient_checkpointing": True}),
        dict(train={"mixed_precision": "bf16", "base_weights": "bf16"}),
        dict(train={"base_weights": "fp8"}),
    ],
    ids=["snr-offset-accum", "caption-and-image-augmentation", "text-encoder-ff-checkpointing", "bf16", "fp8-base-weights"],
)
def test_training_options(tiny_model_dir, dataset, tmp_path, sections):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", **sections)
    finished, sink = run(cfg)
    assert finished.status == "completed"
    _, weights = final_lora(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in weights.values())
    parts = {k.split(".")[0] for k in weights}
    if cfg.network.train_text_encoder:
        assert parts == {"unet", "te1"}
        assert any(k.startswith("te1.text_model.encoder.layers.0.self_attn.q_proj") for k in weights)
        assert any(".ff.net.2." in k for k in weights)
    else:
        assert parts == {"unet"}
    assert sink.of_type(ev.Exported)[0].verified


def test_v_prediction_model(tiny_models, dataset, tmp_path):
    cfg = tiny_config(tiny_models("sd2", "v"), dataset, tmp_path / "run", sample={"every": 0, "prompts": ["tstyle"], "steps": 2})
    finished, sink = run(cfg)
    started = sink.of_type(ev.Started)[0]
    assert (started.model_kind, started.prediction) == ("sd2", "v")
    assert finished.status == "completed"


def test_sdxl_with_text_encoders(tiny_models, dataset, tmp_path):
    cfg = tiny_config(tiny_models("sdxl"), dataset, tmp_path / "run", network={"train_text_encoder": True},
                      sample={"every": 0, "prompts": ["tstyle"], "steps": 2})
    finished, sink = run(cfg)
    assert finished.status == "completed"
    _, weights = final_lora(tmp_path / "run")
    assert {k.split(".")[0] for k in weights} == {"unet", "te1", "te2"}
    assert sink.of_type(ev.Exported)[0].verified


def test_bad_images_are_skipped_with_a_warning(tiny_model_dir, tmp_path):
    data = make_dataset(tmp_path / "data", n=4)
    (tmp_path / "data" / "broken.png").write_bytes((tmp_path / "data" / "img_00.png").read_bytes()[:200])
    (tmp_path / "data" / "notes.jpg").write_text("not an image")
    (tmp_path / "data" / "img_01.txt").unlink()
    cfg = tiny_config(tiny_model_dir, data, tmp_path / "run", dataset={"default_caption": "tstyle"}, train={"max_steps": 2})
    finished, sink = run(cfg)
    assert finished.status == "completed"
    warned = {w.code: w for w in sink.of_type(ev.Warning)}
    bad = [w for w in sink.of_type(ev.Warning) if w.code == "bad_image"]
    assert sorted(w.path.rsplit("/", 1)[-1] for w in bad) == ["broken.png", "notes.jpg"]
    assert warned["missing_captions"].message == (
        '1 image has no caption file; it trains with "tstyle" (the default caption, or the folder\'s name).')
    assert sink.of_type(ev.Started)[0].num_images == 4


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tiny_model_dir, dataset, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    weights_file = next((broken / "unet").glob("*.safetensors"))
    weights = load_file(weights_file)
    # Poison a weight only LoRA training can reach: the output projection of a cross-attention.
    key = next(k for k in weights if k.endswith("attn2.to_out.0.bias"))
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, weights_file)
    cfg = tiny_config(broken, dataset, tmp_path / "run")
    from lora_studio.engine.training.loop import NaNLoss

    with pytest.raises(NaNLoss) as e:
        run(cfg)
    assert "NaN" in e.value.message and "learning_rate" in e.value.hint
    assert checkpoint.list_checkpoints(tmp_path / "run") == []


def test_nan_latents_are_reported_and_never_trained_on(tiny_model_dir, dataset, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from lora_studio.core.errors import UserError

    broken = tmp_path / "broken-vae-model"
    shutil.copytree(tiny_model_dir, broken)
    weights_file = next((broken / "vae").glob("*.safetensors"))
    weights = load_file(weights_file)
    # What SDXL's original VAE does in fp16: activations overflow and the latents come out NaN.
    weights["encoder.conv_in.bias"] = torch.full_like(weights["encoder.conv_in.bias"], float("inf"))
    save_file(weights, weights_file)
    with pytest.raises(UserError) as e:
        run(tiny_config(broken, dataset, tmp_path / "run"))
    assert e.value.code == "nan_latents" and "model.vae" in e.value.hint
    assert checkpoint.list_checkpoints(tmp_path / "run") == []
