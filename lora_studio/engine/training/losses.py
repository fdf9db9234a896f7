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
Both stay finite under zero terminal SNR (SNR = 0 at the last timestep): see `min_snr_weights`, `DEBIASED_MIN_SNR`.
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
                   alphas_cumprod: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The loss [B] of each image of the batch; `mask` [B, 1, h, w] in [0, 1] (dataset.masked_loss) weights
    each latent pixel's loss."""
    pred, target = pred.float(), target.float()
    if train.loss == "huber":
        c = huber_c(train, alphas_cumprod, t)
        loss = 2 * c * (torch.sqrt((pred - target) ** 2 + c**2) - c)
    else:
        loss = F.mse_loss(pred, target, reduction="none")
    if mask is None:
        return loss.mean(dim=(1, 2, 3))
    # Divided by the mask's mean, the loss is the mean over the kept pixels only: an image half masked out
    # pulls as hard on what it keeps as a whole one does (a plain product would halve its learning rate,
    # and make the step size depend on how much of each picture the artist painted). A fully black mask
    # gives 0, not 0 / 0: that image teaches nothing.
    mask = mask.to(loss.device, loss.dtype)
    kept = mask.mean(dim=(1, 2, 3))
    return (loss * mask).mean(dim=(1, 2, 3)) / kept.clamp(min=MASK_FLOOR)


# The smallest mask mean divided by: below it (a mask all but black) the loss is not blown up further.
MASK_FLOOR = 1e-3


# The SNR of SD's usual scaled-linear schedule at its last timestep (ᾱ = 0.00466). Under zero terminal SNR
# the last timestep's SNR is 0, where 1/√SNR is infinite: the ε weight is floored here, so no timestep
# weighs more than the noisiest one of the usual schedule (≈ 14.6).
DEBIASED_MIN_SNR = 0.00468


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ᾱ / (1 − ᾱ) at each timestep: 0 (not NaN) at a zero-terminal-SNR schedule's last one."""
    ac = alphas_cumprod[t]
    return ac / (1 - ac)


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-γ (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"):
    min(SNR, γ) / SNR for ε-prediction, min(SNR, γ) / (SNR + 1) for v-prediction. At SNR = 0 (zero terminal
    SNR's last timestep) the ε weight is its limit, 1, rather than 0 / 0."""
    s = snr(alphas_cumprod, t)
    clipped = torch.clamp(s, max=gamma)
    if prediction == "v":
        return clipped / (s + 1)
    return torch.where(s > 0, clipped / torch.where(s > 0, s, torch.ones_like(s)), torch.ones_like(s))


def debiased_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
    s = torch.clamp(snr(alphas_cumprod, t), max=1000.0)
    return 1 / torch.sqrt(s + 1 if prediction == "v" else s.clamp(min=DEBIASED_MIN_SNR))
