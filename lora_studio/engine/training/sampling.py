"""Sample images during training with the artist's prompts and fixed seeds.

Sampling must leave training exactly as it was: the global RNG states are saved and restored (the
pipeline draws its noise from its own seeded generator anyway), modules return to train mode, and
everything moved onto the GPU for sampling is moved back off and the cache emptied.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

from lora_studio.core.atomic import atomic_write
from lora_studio.core.config import Config
from lora_studio.core.runs import sample_name


@contextlib.contextmanager
def preserved_state(modules: list[torch.nn.Module]):
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    modes = [m.training for m in modules]
    try:
        yield
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        for m, mode in zip(modules, modes):
            m.train(mode)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.3-3.4): a model trained
# with zero terminal SNR samples from the last timestep ("trailing" spacing) and with the guidance rescaled
# by φ = 0.7, or its images over-expose.
ZERO_SNR_GUIDANCE_RESCALE = 0.7


def sampler_config(models) -> dict:
    """The sampling scheduler's settings: the training ones, and for zero terminal SNR the paper's."""
    config = dict(models.scheduler_config)
    if getattr(models, "zero_terminal_snr", False):
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return config


def guidance_rescale(models) -> float:
    return ZERO_SNR_GUIDANCE_RESCALE if getattr(models, "zero_terminal_snr", False) else 0.0


def build_pipeline(models, unet, text_encoders):
    # DPM++ 2M (DPMSolverMultistep): the sampler the UIs default to, good images in 20-30 steps.
    scheduler = DPMSolverMultistepScheduler.from_config(sampler_config(models))
    if models.kind == "sdxl":
        return StableDiffusionXLPipeline(
            vae=models.vae, text_encoder=text_encoders[0], text_encoder_2=text_encoders[1],
            tokenizer=models.tokenizers[0], tokenizer_2=models.tokenizers[1], unet=unet, scheduler=scheduler,
        )
    return StableDiffusionPipeline(
        vae=models.vae, text_encoder=text_encoders[0], tokenizer=models.tokenizers[0], unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


@torch.no_grad()
def generate(models, unet, text_encoders, cfg: Config, step: int, samples_dir: Path, device, autocast) -> list[tuple[int, str, int, Path]]:
    """Write one PNG per prompt; return (index, prompt, seed, path) for each."""
    s = cfg.sample
    width = s.width or cfg.train.resolution
    height = s.height or cfg.train.resolution
    modules = [unet, *text_encoders, models.vae]
    out = []
    with preserved_state(modules):
        for m in modules:
            m.eval()
        pipe = build_pipeline(models, unet, text_encoders)
        pipe.set_progress_bar_config(disable=True)
        for index, prompt in enumerate(s.prompts):
            seed = s.seed + index
            generator = torch.Generator(device="cpu").manual_seed(seed)
            with autocast():
                image = pipe(
                    prompt, negative_prompt=s.negative_prompt or None, num_inference_steps=s.steps,
                    guidance_scale=s.guidance_scale, guidance_rescale=guidance_rescale(models),
                    width=width, height=height, generator=generator,
                    clip_skip=(cfg.model.clip_skip - 1) or None,
                ).images[0]
            path = samples_dir / sample_name(step, index, seed)
            atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
            out.append((index, prompt, seed, path))
        del pipe
    return out
