"""What only a GPU can show, on the tiny models: the training step never makes the host wait for the GPU,
fp8 base weights train, and sampling gives back the memory it took. Skipped without CUDA (CI has none);
tools/gpu_check.sh runs this file on a lent GPU."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import make_dataset, tiny_config

from lora_studio.core import events as ev

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def _trainer(model_dir, data_dir, run_dir, **train):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from lora_studio.engine.bench.random_models import make_inputs
    from lora_studio.engine.models.load import load_models
    from lora_studio.engine.training.step import Trainer

    cfg = tiny_config(model_dir, data_dir, run_dir, train={"mixed_precision": "bf16", **train})
    AcceleratorState._reset_state()
    models = load_models(cfg.model, dtype=torch.bfloat16)
    trainer = Trainer(models, cfg, Accelerator(mixed_precision="bf16"))
    px, caps, sizes, crops = make_inputs(1, 2, 64)[0]
    batch = trainer.encode_batch(px, caps, sizes, crops)
    trainer.offload_encoders(vae=True, text=True)
    return trainer, batch


@pytest.mark.parametrize("base_weights", ["bf16", "fp8"])
def test_the_step_never_makes_the_host_wait(tiny_model_dir, tmp_path, base_weights):
    data = make_dataset(tmp_path / "data" / "1_tstyle", n=2)
    trainer, batch = _trainer(tiny_model_dir, data, tmp_path / "run", base_weights=base_weights)
    for _ in range(3):  # warm-up: the pinned-memory pool and the optimizer state are made here
        trainer.train_step(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call raises
    try:
        losses = [trainer.train_step(batch) for _ in range(5)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack(losses)).all()


def test_sampling_gives_back_the_memory_it_took(tiny_model_dir, tmp_path):
    from lora_studio.engine.training.loop import train

    data = make_dataset(tmp_path / "data" / "1_tstyle", n=2)
    cfg = tiny_config(tiny_model_dir, data, tmp_path / "plain", train={"max_steps": 4, "mixed_precision": "bf16"})
    sampled = tiny_config(tiny_model_dir, data, tmp_path / "sampled", train={"max_steps": 4, "mixed_precision": "bf16"},
                          sample={"every": 2, "prompts": ["tstyle"], "steps": 2})
    peaks = {}
    for name, c in (("plain", cfg), ("sampled", sampled)):
        torch.cuda.empty_cache()
        sink = ev.ListSink()
        assert train(c, sink).status == "completed"
        peaks[name] = torch.cuda.memory_allocated()
    # What is still allocated after a run that sampled is what is allocated after one that did not.
    assert peaks["sampled"] <= peaks["plain"] + (1 << 20)
