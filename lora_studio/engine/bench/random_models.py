"""Full-size and tiny architectures with seeded random weights, and random inputs, for the benchmark.

Speed and memory do not depend on the values, so the benchmark builds the architecture of its preset with
cheap random weights: the tiny models of `engine.models.tiny`, or SD1.5 / SDXL from the configs shipped in
`resources/models/` (built on the meta device, materialized on the target device, cheaply initialized).
`make_inputs` makes random images and captions to train on. Used by `engine.bench.bench`.
"""

from __future__ import annotations

import math

import torch


def _cheap_init_(module: torch.nn.Module, seed: int) -> None:
    """Finite, well-scaled values fast: weights U(±√3/√fan_in) (unit-variance activations), norms 1, biases 0.

    On a GPU `uniform_` is instant. On a CPU it runs at ~50 M values/s, a minute for SDXL, so one seeded block
    of random values is tiled instead (an odd length, so rows of a matrix do not repeat in step)."""
    g = torch.Generator().manual_seed(seed)
    block = (torch.rand(1_000_003, generator=g) * 2 - 1) * math.sqrt(3.0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                scale = 1.0 / math.sqrt(max(p[0].numel(), 1))
                if p.device.type == "cuda":
                    p.uniform_(-math.sqrt(3.0) * scale, math.sqrt(3.0) * scale)
                else:
                    flat = p.view(-1)
                    src = block.to(p.dtype)
                    for start in range(0, flat.numel(), src.numel()):
                        n = min(src.numel(), flat.numel() - start)
                        flat[start : start + n].copy_(src[:n]).mul_(scale)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        for name, b in module.named_buffers():
            if name.endswith("position_ids"):
                b.copy_(torch.arange(b.numel(), device=b.device).view(b.shape))


def build_models(kind: str, size: str, device: torch.device, dtype: torch.dtype, *, prediction: str = "epsilon", seed: int = 0):
    """A `Models` with seeded random weights: frozen UNet and text encoders in `dtype`, the VAE in fp32."""
    from lora_studio.core.model_kinds import shipped_config
    from lora_studio.engine.models import load as models_mod
    from lora_studio.engine.models import tiny
    from lora_studio.engine.models.tokenizers import tokenizer_for

    if size == "tiny":
        parts = tiny.build(kind, prediction, seed)
        unet, vae = parts["unet"], parts["vae"]
        tes = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if kind == "sdxl" else [])
        toks = [parts["tokenizer"]] + ([parts["tokenizer_2"]] if kind == "sdxl" else [])
        sched = dict(parts["scheduler"].config)
        name = f"tiny-{kind} (random)"
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        cfg_dir = shipped_config(kind, prediction)
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg_dir / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg_dir / "vae"))
            tes = [CLIPTextModel(CLIPTextConfig.from_pretrained(cfg_dir / "text_encoder"))]
            if kind == "sdxl":
                tes.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg_dir / "text_encoder_2")))
        # Cast on the meta device, then materialize: the GPU never holds an fp32 copy of a bf16 model.
        unet.to(dtype)
        for te in tes:
            te.to(dtype)
        for i, m in enumerate((unet, vae, *tes)):
            m.to_empty(device=device)
            _cheap_init_(m, seed + i)
        toks = [tokenizer_for(kind)] + ([tokenizer_for(kind, second=True)] if kind == "sdxl" else [])
        sched = models_mod.scheduler_config_for(cfg_dir, prediction)
        name = f"{kind} {cfg_dir.name} (random weights)"
    sched["prediction_type"] = "v_prediction" if prediction == "v" else "epsilon"
    unet.to(device, dtype=dtype)
    vae.to(device, dtype=torch.float32)
    for te in tes:
        te.to(device, dtype=dtype)
    for m in (unet, vae, *tes):
        m.requires_grad_(False)
        m.eval()
    return models_mod.Models(kind, prediction, unet, vae, tes, toks, sched, name, [f"{name}: benchmark model"])


CAPTION_WORDS = ("a painting of", "a watercolor of", "an ink drawing of", "a photo of")
CAPTION_THINGS = ("a lighthouse at dusk", "two cats on a sofa", "a mountain village", "a bowl of lemons")


def make_inputs(n_batches: int, batch_size: int, resolution: int, seed: int = 0) -> list[tuple]:
    """Random 'images' in [-1, 1] and captions: (pixel_values [B,3,H,W], captions, original sizes, crop top-lefts)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        px = torch.rand(batch_size, 3, resolution, resolution, generator=g) * 2 - 1
        caps = [f"{CAPTION_WORDS[(b + i) % 4]} {CAPTION_THINGS[(b * 3 + i) % 4]}, in the style of zkw" for i in range(batch_size)]
        out.append((px, caps, [(resolution, resolution)] * batch_size, [(0, 0)] * batch_size))
    return out
