"""The prompt score: does the base model still read each picture as the prompt it was drawn for?

A text-to-image model is also a zero-shot classifier (Li et al. 2023, "Your Diffusion Model is Secretly a
Zero-Shot Classifier"; Clark & Jaini 2023): noise a picture's latent at a few fixed timesteps and ask the
UNet to predict the noise under each candidate prompt — the prompt the picture shows gives the smallest
error. Here the candidates are the run's own sample prompts (the trigger word taken out, since the base
model does not know it) and the judge is the *base* model, with no LoRA: a picture that follows its
prompt is read as that prompt; an overtrained LoRA draws its training images whatever it is asked, and its
pictures stop being told apart.

Limits: the prompts must differ in what they show (two prompts of the same subject are a coin toss); with
P prompts chance is 1/P, so the score is read against the base model's own samples (the same judge on
pictures that certainly follow); fixed noise and timesteps make it repeatable, not exact.
"""

from __future__ import annotations

import torch

from lora_studio.engine.training import conditioning
from lora_studio.engine.evaluate.style import _pixels

TIMESTEPS = (100, 250, 400, 550, 700)  # mid-range: where the prompt decides the picture (Li et al. §3.2)


@torch.no_grad()
def prompt_errors(models, images, prompts: list[str], size: int, *, seed: int = 0, clip_skip: int = 1) -> torch.Tensor:
    """[n_images, n_prompts]: the base UNet's noise-prediction error for each picture under each prompt."""
    from diffusers import DDPMScheduler

    unet, vae = models.unet, models.vae
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    sched = DDPMScheduler.from_config(models.scheduler_config)
    embeds, pooled = conditioning.encode_text(models.kind, models.text_encoders, models.tokenizers, list(prompts), device, clip_skip)
    pixels = _pixels(images, size).to(device, torch.float32)
    latents = vae.encode(pixels.to(next(vae.parameters()).dtype)).latent_dist.mean.float() * vae.config.scaling_factor
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn((len(TIMESTEPS), *latents.shape[1:]), generator=g).to(device)
    t = torch.tensor(TIMESTEPS, device=device)
    n_p = len(prompts)
    errors = torch.zeros(len(images), n_p)
    for i, lat in enumerate(latents):
        noisy = sched.add_noise(lat.expand(len(TIMESTEPS), *lat.shape), noise, t)
        # Every (timestep, prompt) pair in one batch: [K * P, ...].
        x = noisy.repeat_interleave(n_p, dim=0).to(dtype)
        tt = t.repeat_interleave(n_p)
        e = embeds.repeat(len(TIMESTEPS), 1, 1).to(dtype)
        extra = {}
        if models.kind == "sdxl":
            h, w = pixels.shape[-2:]
            ids = conditioning.sdxl_time_ids([(h, w)] * len(x), [(0, 0)] * len(x), (h, w)).to(device, dtype)
            extra["added_cond_kwargs"] = {"text_embeds": pooled.repeat(len(TIMESTEPS), 1).to(dtype), "time_ids": ids}
        pred = unet(x, tt, e, **extra).sample.float()
        target = noise.repeat_interleave(n_p, dim=0)
        if sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(lat.expand(len(TIMESTEPS), *lat.shape), noise, t).repeat_interleave(n_p, dim=0)
        err = (pred - target).pow(2).mean(dim=(1, 2, 3)).view(len(TIMESTEPS), n_p)
        errors[i] = err.mean(dim=0).cpu()
    return errors


def followed(errors: torch.Tensor, own: list[int]) -> list[bool]:
    """Whether each picture's own prompt (index into the candidates) has the smallest error."""
    return [bool(int(row.argmin()) == j) for row, j in zip(errors, own)]
