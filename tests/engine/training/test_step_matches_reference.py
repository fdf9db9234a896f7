"""Our training step computes what diffusers' LoRA recipe computes (issue 10, deliverable 7).

`Trainer.loss` (what `Trainer.train_step` backpropagates) against `ReferenceLoop.loss` (diffusers'
`train_text_to_image_lora(_sdxl).py`, engine/bench/reference.py), for SD1 and SDXL tiny models, ε and v
prediction, with and without Min-SNR: the loss and the gradient of every LoRA parameter agree within 1e-5
(absolute, fp32, CPU).

Why the comparison is fair, i.e. both sides see exactly the same inputs and weights:
- The base weights: each side loads its own copy of the same tiny diffusers folder (each injects its own LoRA).
- The latents: ours are cached once by `encode_batch` with a seeded generator; the reference VAE-encodes
  every step with `latent_dist.sample()` from torch's global generator. Seeding the global generator with the
  same seed right before the reference's encode makes its sample the same one: the reference's own VAE code
  runs, unmodified, and the test checks its latents equal our cached ones.
- Text conditioning and SDXL's time ids: ours come from the cache, the reference computes them in the step from
  the same captions, sizes and crops (sizes and crops chosen unequal, so an (h, w) or (top, left) swap shows);
  the test checks they agree before it compares losses, so a mismatch names its cause.
- Noise and timesteps: drawn once and given to both `loss` methods; the timesteps are one small and one large
  so Min-SNR's clamp is exercised on one image and not on the other.
- LoRA weights: the two sides initialise differently (peft's default, lora_B zero, vs "gaussian"), so our
  lora_B is perturbed away from zero (else lora_A gets no gradient) and every LoRA weight is copied, by
  module name, into the reference before either side runs.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from lora_studio.core.config import Config
from lora_studio.engine.bench.random_models import make_inputs
from lora_studio.engine.bench.reference import ReferenceLoop
from lora_studio.engine.models.load import load_models
from lora_studio.engine.training.step import Trainer

ATOL = 1e-5
# The tiny models' LoRA gradients are ~1e-4..1e-3, so 1e-5 absolute alone would let a gradient be 10 % off: the
# difference must also stay under 1e-5 of the largest gradient (the sides measure ~1e-7 of it, from Min-SNR's
# two ways of computing the SNR; 0 without it).
REL = 1e-5
LATENT_SEED = 1234
TIMESTEPS = torch.tensor([17, 873])
# Unequal sides and crop offsets, so the time ids would differ if either side swapped (h, w) or (top, left).
ORIGINAL_SIZES = [(96, 80), (64, 128)]
CROP_TOP_LEFTS = [(8, 0), (0, 32)]


def _config(model_dir, min_snr_gamma: float) -> Config:
    # Everything the recipe has no switch for is off (text-encoder LoRA, dropout, noise offset); rank != alpha,
    # so the LoRA scaling is exercised.
    return Config().replace(
        model={"base": str(model_dir)},
        network={"rank": 4, "alpha": 2.0, "targets": "attention", "train_text_encoder": False, "dropout": 0.0},
        train={"mixed_precision": "no", "base_weights": "fp32", "noise_offset": 0.0, "min_snr_gamma": min_snr_gamma,
               "max_grad_norm": 1.0, "learning_rate": 1e-4, "lr_scheduler": "constant", "warmup_steps": 0, "seed": 0},
    )


def _accelerator() -> Accelerator:
    return Accelerator(mixed_precision="no", cpu=True)


def _lora_params(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in unet.named_parameters() if "lora_" in n}


def _sides(tiny_models, kind: str, prediction: str, min_snr_gamma: float = 0.0):
    """(trainer, our cached batch, reference loop, its batch), LoRA weights equal and lora_B nonzero."""
    cfg = _config(tiny_models(kind, prediction), min_snr_gamma)
    (pixels, captions, _, _), = make_inputs(1, 2, 64, seed=3)
    sizes, crops = ORIGINAL_SIZES, CROP_TOP_LEFTS

    trainer = Trainer(load_models(cfg.model), cfg, _accelerator())
    ours = trainer.encode_batch(pixels, captions, sizes, crops, generator=torch.Generator().manual_seed(LATENT_SEED))
    trainer.ready()
    ref = ReferenceLoop(load_models(cfg.model), cfg, _accelerator())
    theirs = ref.prepare_batch(pixels, captions, sizes, crops)

    our_lora, ref_lora = _lora_params(trainer.models.unet), _lora_params(ref.models.unet)
    assert set(our_lora) == set(ref_lora) and our_lora  # same peft module names on both sides
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in our_lora.items():
            if "lora_B" in name:
                p.normal_(0.0, 0.05, generator=g)
            ref_lora[name].copy_(p)
    return trainer, ours, ref, theirs


def _reference_conditioning(ref: ReferenceLoop, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    if ref.kind == "sdxl":
        return ref._encode_prompt_sdxl(batch)
    return ref.text_encoders[0](batch["input_ids"], return_dict=False)[0], None


def _loss_and_grads(loss: torch.Tensor, unet: torch.nn.Module) -> tuple[float, dict[str, torch.Tensor]]:
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in _lora_params(unet).items()}


CASES = [("sd1", "epsilon", 0.0), ("sd1", "v", 0.0), ("sdxl", "epsilon", 0.0), ("sdxl", "v", 0.0),
         ("sd1", "epsilon", 5.0), ("sd1", "v", 5.0), ("sdxl", "epsilon", 5.0), ("sdxl", "v", 5.0)]


@pytest.mark.parametrize(("kind", "prediction", "min_snr_gamma"), CASES)
def test_loss_and_lora_gradients_equal_the_diffusers_recipe(tiny_models, kind, prediction, min_snr_gamma):
    trainer, ours, ref, theirs = _sides(tiny_models, kind, prediction, min_snr_gamma)

    # The inputs the two sides compute for themselves agree first (else the loss check could not say why).
    with torch.no_grad():
        torch.manual_seed(LATENT_SEED)
        assert torch.allclose(ref.encode_latents(theirs), ours["latents"], atol=ATOL, rtol=0), "latents"
        embeds, pooled = _reference_conditioning(ref, theirs)
        assert torch.allclose(embeds, ours["prompt_embeds"], atol=ATOL, rtol=0), "text embeddings"
        if kind == "sdxl":
            assert torch.allclose(pooled, ours["pooled"], atol=ATOL, rtol=0), "pooled text embedding"
            target = tuple(theirs["pixel_values"].shape[-2:])
            assert torch.equal(ref._time_ids(theirs, target), ours["time_ids"]), "time ids"
            assert ours["time_ids"][0].tolist() == [96, 80, 8, 0, 64, 64]

    noise = torch.randn(ours["latents"].shape, generator=torch.Generator().manual_seed(11))
    our_loss, our_grads = _loss_and_grads(trainer.loss(ours, noise, TIMESTEPS), trainer.models.unet)
    torch.manual_seed(LATENT_SEED)  # the reference's VAE sample: the latents checked above
    ref_loss, ref_grads = _loss_and_grads(ref.loss(theirs, noise.clone(), TIMESTEPS.clone()), ref.models.unet)

    assert our_loss == pytest.approx(ref_loss, abs=ATOL, rel=0)
    assert our_loss > 0
    assert set(our_grads) == set(ref_grads)
    scale = max(g.abs().max().item() for g in our_grads.values())
    for name, grad in our_grads.items():
        diff = (grad - ref_grads[name]).abs().max().item()
        assert diff <= ATOL and diff <= REL * scale, f"{name}: gradients differ by {diff:.2e} (largest gradient {scale:.2e})"
    # Not vacuous: gradient reaches both halves of every adapter.
    for half in ("lora_A", "lora_B"):
        grads = [g for n, g in our_grads.items() if half in n]
        assert grads and all(g.abs().max() > 0 for g in grads), half


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_each_step_backpropagates_its_loss_method(tiny_models, kind):
    # The seam is the step: `train_step` returns `loss` for the noise and timesteps it draws, and the
    # reference's `train_step` returns its `loss` with the recipe's own draws.
    trainer, ours, ref, theirs = _sides(tiny_models, kind, "v", 5.0)
    with torch.no_grad():
        expected = trainer.loss(ours, *trainer.draw_noise(ours["latents"].shape, trainer._noise_generator()))
    assert torch.equal(trainer.train_step(ours), expected)

    torch.manual_seed(0)
    with torch.no_grad():
        expected_ref = ref.loss(theirs).item()
    torch.manual_seed(0)
    assert ref.train_step(theirs) == expected_ref
