"""Which noise levels a step trains on: `train.timestep_sampling` over [`min_timestep`, `max_timestep`).

- `uniform`: every timestep of the range alike (diffusers' and kohya's default).
- `logit_normal`: t / T = sigmoid(u), u ~ N(`logit_mean`, `logit_std`) — SD3's sampler (Esser et al. 2024,
  "Scaling Rectified Flow Transformers"): the middle noise levels, where the picture's layout is decided,
  get most of the steps.
- `style`: the log signal-to-noise ratio λ = log(ᾱ / (1 - ᾱ)) ~ N(`style_snr_mean`, `style_snr_std`) —
  the "Style-friendly SNR sampler" (Choi et al. 2024, arXiv 2411.14793), which found that styles emerge at
  high noise and biases training there. The paper's mean of -6 is for SD3/FLUX, whose log-SNR reaches far
  lower; SD's scaled-linear schedule runs from about +7 (t = 0) to -5.4 (t = 999), so at -6 two thirds of
  the distribution would lie past the schedule's end and the rest crowd its last timesteps; the default here is -3 (83 % of the steps at t ≥ 500, half
  above t ≈ 740). A distribution is turned into a probability for each discrete timestep (its density times the
  width of the timestep's bin), restricted to the range and drawn with torch.multinomial from the step's
  own generator, so a seed gives the same timesteps again.

Plain uniform over all timesteps keeps torch.randint, the exact draw of earlier versions: runs made with
the defaults (and their resumes) are unchanged.
"""

from __future__ import annotations

import torch


def timestep_weights(train, alphas_cumprod: torch.Tensor) -> torch.Tensor | None:
    """The probability of each timestep (sums to 1), or None where the draw is a plain randint."""
    n = len(alphas_cumprod)
    low, high = train.min_timestep, min(train.max_timestep, n)
    kind = train.timestep_sampling
    if kind == "uniform":
        return None
    t = torch.arange(n, dtype=torch.float64)
    if kind == "logit_normal":
        x = (t + 0.5) / n
        u = torch.log(x / (1 - x))
        # The density of sigmoid(u) at x, u ~ N(m, s): N(logit x; m, s) / (x (1 - x)); bins are 1/n wide.
        w = torch.exp(-((u - train.logit_mean) ** 2) / (2 * train.logit_std**2)) / (x * (1 - x))
    elif kind == "style":
        # Floored as diffusers' samplers floor a zero-terminal-SNR schedule's last ᾱ (0 there: λ = -inf).
        ac = alphas_cumprod.double().cpu().clamp(min=2**-24)
        lam = torch.log(ac / (1 - ac))
        width = torch.gradient(lam)[0].abs()  # how much λ one timestep spans
        w = torch.exp(-((lam - train.style_snr_mean) ** 2) / (2 * train.style_snr_std**2)) * width
    else:
        raise ValueError(f"unknown timestep sampling {kind!r}")  # validate() names the choices first
    w[:low] = 0
    w[high:] = 0
    return (w / w.sum()).float()


def draw_timesteps(train, weights: torch.Tensor | None, n: int, batch: int, g: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """`batch` timesteps from `g` alone."""
    if weights is None:
        return torch.randint(train.min_timestep, min(train.max_timestep, n), (batch,), generator=g, device=device)
    return torch.multinomial(weights.to(device), batch, replacement=True, generator=g)
