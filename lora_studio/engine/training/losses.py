"""The per-image training loss (`train.loss`) and the optional per-timestep weights beside min-SNR.

- `mse`: the squared error of the prediction, SD's own loss.
- `huber`: the scheduled pseudo-Huber loss 2c(√((x−y)² + c²) − c) (Khrapov et al. 2024, "Improving Diffusion
  Models's Data-Corruption Resistance using Scheduled Pseudo-Huber Loss", arXiv 2403.16728): quadratic for
  small errors, linear for large ones, so a few odd pictures pull less. Its c follows `train.huber_schedule`:
  `snr` (the paper's: c = (1 − c₀) / (1 + σ_t)² + c₀, close to 1 — nearly MSE — at low noise, c₀ at high
  noise), `exponential` (c = exp(ln(c₀) · t / T), from 1 at t = 0 down to c₀) or `constant` (c₀), with c₀
  = `train.huber_c`. These are the formulas kohya's sd-scripts uses, so a recipe carries over.
- `train.debiased_estimation`: weights each image by 1/√SNR (SNR clamped at 1000; SNR + 1 for
  v-prediction), from "Debias the Training of Diffusion Models" (Yu et al. 2024, arXiv 2310.08442), as
  kohya's `--debiased_estimation_loss` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def huber_c(train, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """c for each image's timestep, shaped [B, 1, 1, 1]."""
    c0, n = train.huber_c, len(alphas_cumprod)
    if train.huber_schedule == "exponential":
        c = torch.exp(math.log(c0) * t.double() / n)
    elif train.huber_schedule == "snr":
        ac = alphas_cumprod[t].double()
        sigma = ((1 - ac) / ac) ** 0.5
        c = (1 - c0) / (1 + sigma) ** 2 + c0
    else:
        c = torch.full(t.shape, c0, dtype=torch.float64, device=t.device)
    return c.float().view(-1, 1, 1, 1)


def per_image_loss(train, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor,
                   alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The loss [B] of each image of the batch."""
    pred, target = pred.float(), target.float()
    if train.loss == "huber":
        c = huber_c(train, alphas_cumprod, t)
        loss = 2 * c * (torch.sqrt((pred - target) ** 2 + c**2) - c)
    else:
        loss = F.mse_loss(pred, target, reduction="none")
    return loss.mean(dim=(1, 2, 3))


def debiased_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
    ac = alphas_cumprod[t]
    snr = torch.clamp(ac / (1 - ac), max=1000.0)
    return 1 / torch.sqrt(snr + 1 if prediction == "v" else snr)
