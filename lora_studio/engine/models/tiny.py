"""Tiny real Stable Diffusion models, built from configs in about a second.

They have the real architectures' structure (SD1-like, SD2-like with linear projections, SDXL-like with two
text encoders of different widths, as the real 768 / 1280 ones are: single-file loaders tell the
encoders apart by width) and the real CLIP tokenizer from resources/. Tests train them; the demo project
ships one, labelled as a demo model: its samples show the machinery working, not art.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lora_studio.core.model_kinds import KINDS
from lora_studio.engine.models.tokenizers import tokenizer_for

TINY_RESOLUTION = 64  # the VAE downsamples by 8: 8x8 latents
SDXL_TE_WIDTHS = (32, 48)


CLIP_VOCAB = 49408  # the shared tokenizer's size; the last two ids are the start and end tokens


def _text_config(width: int, *, layers: int = 2, act: str = "quick_gelu", projection: int | None = None,
                 vocab_size: int = CLIP_VOCAB) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=width * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection or width,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=1,
    )


def scheduler(prediction: str = "epsilon") -> DDPMScheduler:
    # Stable Diffusion's training schedule (scaled-linear betas 0.00085 .. 0.012 over 1000 steps).
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type="v_prediction" if prediction == "v" else "epsilon",
    )


def vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_RESOLUTION,
        scaling_factor=0.18215,
    )


def unet(kind: str = "sd1") -> UNet2DConditionModel:
    common = dict(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
    )
    if kind == "sdxl":
        te1, te2 = SDXL_TE_WIDTHS
        return UNet2DConditionModel(
            **common,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(2, 4),
            cross_attention_dim=te1 + te2,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            # 6 time ids (original size, crop offset, target size) x 8 + the pooled second-encoder output.
            projection_class_embeddings_input_dim=6 * 8 + te2,
        )
    return UNet2DConditionModel(
        **common,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8 if kind == "sd1" else (2, 4),
        cross_attention_dim=32,
        use_linear_projection=kind == "sd2",
    )


def build(kind: str = "sd1", prediction: str = "epsilon", seed: int = 0, *, vocab_size: int = CLIP_VOCAB) -> dict:
    """The components of a tiny pipeline, with seeded random weights. A smaller `vocab_size` makes text
    encoders for a smaller vocabulary than CLIP's (the tokenizers are still the shared CLIP one)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    torch.manual_seed(seed)
    parts = {"unet": unet(kind), "vae": vae(), "scheduler": scheduler(prediction), "tokenizer": tokenizer_for(kind)}
    if kind == "sdxl":
        te1, te2 = SDXL_TE_WIDTHS
        parts["text_encoder"] = CLIPTextModel(_text_config(te1, vocab_size=vocab_size))
        parts["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(te2, act="gelu", vocab_size=vocab_size))
        parts["tokenizer_2"] = tokenizer_for(kind, second=True)
    else:
        parts["text_encoder"] = CLIPTextModel(_text_config(32, act="gelu" if kind == "sd2" else "quick_gelu", vocab_size=vocab_size))
    return parts


def pipeline(kind: str = "sd1", prediction: str = "epsilon", seed: int = 0):
    parts = build(kind, prediction, seed)
    if kind == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(**parts)
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_diffusers(path: str | Path, kind: str = "sd1", prediction: str = "epsilon", seed: int = 0) -> Path:
    """Write a tiny model as a diffusers folder (safetensors weights) and return its path."""
    path = Path(path)
    pipeline(kind, prediction, seed).save_pretrained(path, safe_serialization=True)
    return path
