"""Text conditioning exactly as diffusers' pipelines compute it, so training matches what UIs render.

SD1/SD2: one encoder's last hidden state (or an earlier layer through the final layer norm for
clip skip). SDXL: the penultimate hidden states of both encoders concatenated, plus the second
encoder's pooled projection and the six "time ids" (original size, crop top-left, target size) that
SDXL was trained with (Podell et al. 2023, §2.2 "micro-conditioning").
"""

from __future__ import annotations

import torch


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def _final_layer_norm(text_encoder) -> torch.nn.Module:
    inner = getattr(text_encoder, "text_model", text_encoder)
    return inner.final_layer_norm


def encode_text(
    kind: str, text_encoders: list, tokenizers: list, captions: list[str], device: torch.device, clip_skip: int = 1
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt_embeds [B, 77, D], pooled [B, P] for SDXL else None). clip_skip follows A1111 (1 = none)."""
    skip = max(clip_skip, 1) - 1  # diffusers counts skipped layers; A1111 counts "clip skip 1" as none
    if kind != "sdxl":
        te = text_encoders[0]
        ids = tokenize(tokenizers[0], captions).to(device)
        if skip == 0:
            return te(ids)[0], None
        out = te(ids, output_hidden_states=True)
        return _final_layer_norm(te)(out.hidden_states[-(skip + 1)]), None
    embeds, pooled = [], None
    for tokenizer, te in zip(tokenizers, text_encoders):
        ids = tokenize(tokenizer, captions).to(device)
        out = te(ids, output_hidden_states=True)
        pooled = out[0]  # the last encoder's (OpenCLIP-bigG) pooled projection, as the SDXL pipeline does
        embeds.append(out.hidden_states[-(skip + 2)])
    return torch.cat(embeds, dim=-1), pooled


def sdxl_time_ids(original_sizes, crop_top_lefts, target_size) -> torch.Tensor:
    """[B, 6]: (orig h, orig w, crop top, crop left, target h, target w) per image."""
    rows = [[*o, *c, *target_size] for o, c in zip(original_sizes, crop_top_lefts)]
    return torch.tensor(rows, dtype=torch.float32)
