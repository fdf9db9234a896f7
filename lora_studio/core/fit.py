"""Will this run fit on this GPU? The peak-memory estimate, in pure Python (the app shows it too).

The model (docs/performance.md, "The fit estimate", has the derivation):

    peak = max(training phase, caching phase)
    training = weights + LoRA & optimizer + activations + workspace
    caching  = UNet + VAE + text encoders + one VAE encode (the engine encodes with the UNet already placed)

- weights: parameter counts of the real architectures (exact, from the shipped configs) × bytes of the
  storage dtype; fp8 stores Linear/Conv weights in one byte (99.9 % of the UNet), the rest in the compute dtype. The VAE
  (fp32) stays on the GPU only when latents are not cached, the text encoders when their outputs are not
  cached or they train.
- LoRA & optimizer: the network's trainable parameters (exact per type, rank and target set: `network_params`,
  LoHa two pairs per module, LoKr its Kronecker factors, LoCon the convolutions at conv_rank, DoRA a magnitude
  per output; DoRA's per-step weight norms add one whole weight to the workspace) × (8 bytes of fp32 weight and gradient +
  the optimizer's state per parameter, core/optimizers.state_bytes): 16 with AdamW (two moments), 10 with
  8-bit AdamW, 24 with Prodigy, ≈ 8 + 4/rank with Adafactor (factored), 12 with Lion, 9 with 8-bit Lion,
  16 with schedule-free AdamW, ≈ 12 + 8/rank with CAME.
- activations: what the forward pass keeps for backward, per sample, linear in the latent area
  ((resolution / 8)²), with and without gradient checkpointing. Calibrated by simulating our training step on
  the full-size UNets under FakeTensorMode with CUDA's autocast policy
  (`python -m lora_studio.engine.bench.fit_calibration`; flash / memory-efficient attention, so O(tokens) memory per
  head). fp32 compute doubles them; fp32 weights under 16-bit autocast add the 16-bit copies of the weights
  that the matmuls keep.
- workspace: the transient rise above that during backward (also calibrated), a VAE encode per step when
  latents are not cached, the upcast fp8 layers (`Arch.fp8_upcast_ckpt`), cuBLAS workspace, and what the CUDA context and the caching
  allocator take beyond the tensors (not in torch.cuda.max_memory_allocated; see `Estimate.overhead_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_studio.core import optimizers
from lora_studio.core.model_kinds import KINDS

GB = 1_000_000_000
MiB = 1 << 20

# Bytes the CUDA context (kernels, cuBLAS handles) takes outside the allocator, and the allocator's slack
# (blocks cached but not allocated) as a share of what changes every step.
CUDA_CONTEXT_BYTES = 500 * MiB
ALLOCATOR_SLACK = 0.10
CUBLAS_WORKSPACE_BYTES = 64 * MiB
# VAE encoder (fp32, no grad): its peak is five 128-channel fp32 maps of the image (measured, 2,560 B/pixel).
VAE_ENCODE_BYTES_PER_PIXEL = 2560
# How the engine caches (engine/training/step.py + engine/training/loop.py): the VAE and text encoders are on the GPU
# while the images are encoded; the UNet goes there only afterwards (`Trainer.ready`).


@dataclass(frozen=True)
class Arch:
    unet: int  # parameters
    unet_matmul: int  # parameters in Linear / Conv2d weights (what fp8 stores in one byte)
    vae: int
    text_encoders: tuple[int, ...]
    te_layers: tuple[tuple[int, int], ...]  # (layers, width) per text encoder
    lora_per_rank: dict[str, int]  # UNet LoRA parameters per unit of rank, by network.targets
    te_lora_per_rank: int  # q/k/v/out LoRA parameters per unit of rank, all text encoders
    # Activation bytes per latent pixel per sample, 16-bit compute (CUDA autocast policy): kept for backward
    # (saved) and the rise above that during backward (transient), without / with gradient checkpointing.
    saved: float
    saved_ckpt: float
    transient: float
    transient_ckpt: float
    # fp8 base weights (engine/training/fp8.py) are upcast to the compute dtype as each layer runs, and backward keeps
    # the upcast copy of every weight it still needs. With gradient checkpointing that is one block's worth at
    # a time: this share of the Linear/Conv weights in the compute dtype (simulated, independent of resolution).
    # Without checkpointing it is nearly all of them (FP32_WEIGHT_COPY_SHARE[False]): fp8 then saves nothing.
    fp8_upcast_ckpt: float


# Parameter counts: the shipped configs (resources/models/*), counted on the meta device.
# Activation coefficients: `python -m lora_studio.engine.bench.fit_calibration` (see docs/performance.md).
ARCHS: dict[str, Arch] = {
    "sd1": Arch(
        unet=859_520_964, unet_matmul=859_077_120, vae=83_653_863, text_encoders=(123_060_480,), te_layers=((12, 768),),
        lora_per_rank={"attention": 199_296, "attention+ff": 199_296 + 174_720}, te_lora_per_rank=12 * 4 * 2 * 768,
        saved=280_306, saved_ckpt=42_301, transient=6_071, transient_ckpt=24_794, fp8_upcast_ckpt=0.126,
    ),
    "sd2": Arch(
        unet=865_910_724, unet_matmul=865_466_880, vae=83_653_863, text_encoders=(340_387_840,), te_layers=((23, 1024),),
        lora_per_rank={"attention": 207_488, "attention+ff": 207_488 + 174_720}, te_lora_per_rank=23 * 4 * 2 * 1024,
        saved=269_905, saved_ckpt=31_671, transient=6_804, transient_ckpt=25_448, fp8_upcast_ckpt=0.125,
    ),
    "sdxl": Arch(
        unet=2_567_463_684, unet_matmul=2_565_880_320, vae=83_653_863, text_encoders=(123_060_480, 694_659_840),
        te_layers=((12, 768), (32, 1280)),
        lora_per_rank={"attention": 1_451_520, "attention+ff": 1_451_520 + 1_164_800},
        te_lora_per_rank=12 * 4 * 2 * 768 + 32 * 4 * 2 * 1280,
        saved=478_046, saved_ckpt=32_537, transient=4_339, transient_ckpt=11_606, fp8_upcast_ckpt=0.029,
    ),
}
# The layers each network trains, as (out, in, kernel side, how many), counted on the meta device from the
# shipped configs with the trainer's own target rule (engine/training/lora.py; tests/engine/training/
# test_network_params.py checks them against peft's real parameter counts). "conv" are the 3x3 convolutions
# (network.conv_rank), "conv1x1" the 1x1 ones (ResNet shortcuts, SD1's proj_in / proj_out: network.rank).
_CONV = ((320, 320, 3, 8), (320, 640, 3, 2), (320, 960, 3, 1), (640, 320, 3, 1), (640, 640, 3, 8), (640, 960, 3, 1),
         (640, 1280, 3, 1), (640, 1920, 3, 1), (1280, 640, 3, 1))
_CONV1X1 = ((320, 640, 1, 2), (320, 960, 1, 1), (640, 320, 1, 1), (640, 960, 1, 1), (640, 1280, 1, 1), (640, 1920, 1, 1),
            (1280, 640, 1, 1), (1280, 1920, 1, 1))
_SD_FF = ((320, 1280, 1, 5), (640, 2560, 1, 5), (1280, 5120, 1, 6), (2560, 320, 1, 5), (5120, 640, 1, 5), (10240, 1280, 1, 6))
LAYERS: dict[str, dict[str, tuple[tuple[int, int, int, int], ...]]] = {
    "sd1": {
        "attention": ((320, 320, 1, 30), (320, 768, 1, 10), (640, 640, 1, 30), (640, 768, 1, 10), (1280, 768, 1, 12), (1280, 1280, 1, 36)),
        "ff": _SD_FF,
        "conv": _CONV + ((1280, 1280, 3, 20), (1280, 1920, 3, 1), (1280, 2560, 3, 5)),
        "conv1x1": _CONV1X1 + ((320, 320, 1, 10), (640, 640, 1, 10), (1280, 1280, 1, 12), (1280, 2560, 1, 5)),
        "te": ((768, 768, 1, 48),),
    },
    "sd2": {
        "attention": ((320, 320, 1, 30), (320, 1024, 1, 10), (640, 640, 1, 30), (640, 1024, 1, 10), (1280, 1024, 1, 12), (1280, 1280, 1, 36)),
        "ff": _SD_FF,
        "conv": _CONV + ((1280, 1280, 3, 20), (1280, 1920, 3, 1), (1280, 2560, 3, 5)),
        "conv1x1": _CONV1X1 + ((1280, 2560, 1, 5),),
        "te": ((1024, 1024, 1, 92),),
    },
    "sdxl": {
        "attention": ((640, 640, 1, 60), (640, 2048, 1, 20), (1280, 1280, 1, 360), (1280, 2048, 1, 120)),
        "ff": ((640, 2560, 1, 10), (1280, 5120, 1, 60), (5120, 640, 1, 10), (10240, 1280, 1, 60)),
        "conv": _CONV + ((1280, 1280, 3, 11), (1280, 1920, 3, 1), (1280, 2560, 3, 2)),
        "conv1x1": _CONV1X1 + ((1280, 2560, 1, 2),),
        "te": ((768, 768, 1, 48), (1280, 1280, 1, 128)),
    },
}
NETWORK_TYPES = ("lora", "locon", "loha", "lokr")
FULL_RANK = 1_000_000  # LoKr's full matrix: no layer reaches this rank (engine/training/lora.FULL_RANK)


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """How LoKr splits a width in two (peft's `factorization`, itself LyCORIS's): (m, n), m * n = dimension."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


def module_params(out: int, inp: int, k: int, rank: int, network_type: str = "lora", *, dora: bool = False, factor: int = -1) -> int:
    """Trainable parameters of one module: LoRA/LoCon r·(in·k² + out) (+ out with DoRA's magnitude), LoHa two
    such pairs, LoKr a whole w1 (out_l × in_m) ⊗ w2, w2 whole when the rank reaches half its sides, else r·(out_k + in_n·k²)."""
    flat_in = inp * k * k
    if network_type in ("lora", "locon"):
        return rank * (flat_in + out) + (out if dora else 0)
    if network_type == "loha":
        return 2 * rank * (flat_in + out)
    if network_type == "lokr":
        in_m, in_n = factorization(inp, factor)
        out_l, out_k = factorization(out, factor)
        w2_whole = rank >= max(out_k, in_n) / 2
        return out_l * in_m + (out_k * in_n * k * k if w2_whole else rank * (out_k + in_n * k * k))
    raise ValueError(f"network_type must be one of {NETWORK_TYPES}, not {network_type!r}")


def network_params(kind: str, rank: int, *, network_type: str = "lora", targets: str = "attention", conv_rank: int = 8,
                   dora: bool = False, factor: int = -1, full_matrix: bool = False, train_text_encoder: bool = False) -> int:
    """The trainable parameters of a network on the architecture `kind` (exact, as peft builds it)."""
    layers = LAYERS[kind]
    if network_type == "lokr" and full_matrix:
        rank = conv_rank = FULL_RANK
    groups = [("attention", rank)] + ([("ff", rank)] if targets == "attention+ff" else [])
    if network_type != "lora":
        groups += [("conv", conv_rank), ("conv1x1", rank)]
    if train_text_encoder:
        groups.append(("te", rank))
    return sum(n * module_params(o, i, k, r, network_type, dora=dora, factor=factor) for g, r in groups for o, i, k, n in layers[g])


def dora_workspace_bytes(kind: str, network_type: str, targets: str) -> int:
    """DoRA's extra work each step: every module's weight norm of W + ΔW, one whole fp32 weight (and its
    update) at a time; the largest trained module's."""
    groups = ["attention"] + (["ff"] if targets == "attention+ff" else []) + (["conv", "conv1x1"] if network_type != "lora" else [])
    largest = max(o * i * k * k for g in groups for o, i, k, _ in LAYERS[kind][g])
    return 2 * 4 * largest


BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
# fp32 compute ("no" mixed precision) over 16-bit compute (calibrated on SD1.5 at 512 px): (saved, transient),
# without and with gradient checkpointing. Not 2.0: under CUDA autocast the norms already run in fp32.
FP32_SCALE = {False: (1.40, 2.12), True: (1.70, 1.68)}
# fp32 weights under 16-bit autocast: every matmul keeps the 16-bit copy of its weight for backward (94 % of
# them, measured); with checkpointing only the blocks being recomputed do (12.5 %).
FP32_WEIGHT_COPY_SHARE = {False: 0.94, True: 0.125}
# Text-encoder activations kept for backward when it trains: ~16 values of its width per token and layer.
TE_SAVED_VALUES_PER_TOKEN_LAYER = 16
TOKENS = 77


@dataclass(frozen=True)
class Estimate:
    total_bytes: int
    parts: dict[str, int]  # weights, lora+optimizer, activations, workspace (they sum to total_bytes)
    phase: str = "training"  # the phase that peaks: training, or caching (encoding images before training)
    overhead_bytes: int = 0  # in workspace: CUDA context and allocator slack, not in max_memory_allocated
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def allocated_bytes(self) -> int:
        """What torch.cuda.max_memory_allocated should read (the benchmark's peak on a GPU)."""
        return self.total_bytes - self.overhead_bytes


def _resolve_precision(mixed_precision: str, base_weights: str) -> tuple[str, str]:
    mixed = "bf16" if mixed_precision == "auto" else mixed_precision
    if mixed not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be auto, no, fp16 or bf16, not {mixed_precision!r}")
    base = base_weights
    if base == "auto":
        base = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}[mixed]
    if base not in BYTES:
        raise ValueError(f"base_weights must be auto, fp32, fp16, bf16 or fp8, not {base_weights!r}")
    return mixed, base


def estimate_peak_bytes(
    kind: str,
    resolution: int,
    batch_size: int,
    rank: int,
    *,
    gradient_checkpointing: bool = False,
    base_weights: str = "bf16",
    train_text_encoder: bool = False,
    cache_latents: bool = True,
    cache_text_encoder: bool = True,
    mixed_precision: str = "bf16",
    targets: str = "attention",
    optimizer: str = "adamw",
    phase: str = "peak",
    network_type: str = "lora",
    conv_rank: int = 8,
    dora: bool = False,
    factor: int = -1,
    full_matrix: bool = False,
    ema_on_device: bool = False,
) -> Estimate:
    """The peak GPU memory of a training run with these settings (bytes, with its parts).

    `phase`: "peak" (the larger of the two), "training" (the steps) or "caching" (encoding the images)."""
    if phase not in ("peak", "training", "caching"):
        raise ValueError(f"phase must be peak, training or caching, not {phase!r}")
    if kind not in ARCHS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    a = ARCHS[kind]
    mixed, base = _resolve_precision(mixed_precision, base_weights)
    compute_bytes = 4 if mixed == "no" else 2
    te_bytes = compute_bytes if base == "fp8" else BYTES[base]  # text encoders are never stored in fp8
    notes: list[str] = []

    # Weights.
    if base == "fp8":
        unet_w = a.unet_matmul * 1 + (a.unet - a.unet_matmul) * compute_bytes  # biases and norms: compute dtype
    else:
        unet_w = a.unet * BYTES[base]
    vae_w = a.vae * 4
    te_w = sum(a.text_encoders) * te_bytes
    te_resident = train_text_encoder or not cache_text_encoder

    # LoRA and optimizer state.
    lora = network_params(kind, rank, network_type=network_type, targets=targets, conv_rank=conv_rank, dora=dora,
                          factor=factor, full_matrix=full_matrix, train_text_encoder=train_text_encoder)
    # fp32 weight + fp32 gradient, and what the optimizer keeps per parameter (each optimizer's is cited there).
    per_param = 4 + 4 + optimizers.state_bytes(optimizer, rank)
    if ema_on_device:
        per_param += 4  # train.ema: diffusers' EMAModel keeps an fp32 shadow of each LoRA parameter (none with ema_on_cpu)
    lora_opt = lora * per_param

    # Activations.
    ckpt = bool(gradient_checkpointing)
    pixels = (resolution // 8) ** 2 * batch_size
    saved_scale, transient_scale = FP32_SCALE[ckpt] if mixed == "no" else (1.0, 1.0)
    saved = (a.saved_ckpt if ckpt else a.saved) * pixels * saved_scale
    transient = (a.transient_ckpt if ckpt else a.transient) * pixels * transient_scale
    if base == "fp32" and mixed != "no":
        saved += FP32_WEIGHT_COPY_SHARE[ckpt] * a.unet_matmul * 2
        notes.append("fp32 base weights under 16-bit autocast keep 16-bit copies of the weights for backward; "
                     "bf16 base weights avoid that")
    fp8_inflight = 0
    if base == "fp8" and ckpt:
        fp8_inflight = int(a.fp8_upcast_ckpt * a.unet_matmul * compute_bytes)
    elif base == "fp8":
        saved += FP32_WEIGHT_COPY_SHARE[False] * a.unet_matmul * compute_bytes
        notes.append("fp8 base weights save memory only with gradient checkpointing: without it, backward keeps "
                     "an upcast copy of nearly every weight")
    if train_text_encoder:
        te_act = sum(n * w for n, w in a.te_layers) * TOKENS * TE_SAVED_VALUES_PER_TOKEN_LAYER * compute_bytes * batch_size
        saved += te_act / (2 if gradient_checkpointing else 1)
    vae_step = 0 if cache_latents else VAE_ENCODE_BYTES_PER_PIXEL * resolution * resolution * batch_size
    dora_work = dora_workspace_bytes(kind, network_type, targets) if dora and network_type in ("lora", "locon") else 0
    step_workspace = transient + vae_step + fp8_inflight + dora_work + CUBLAS_WORKSPACE_BYTES
    slack = int(ALLOCATOR_SLACK * (saved + step_workspace))

    weights = unet_w + (0 if cache_latents else vae_w) + (te_w if te_resident else 0)
    training = {
        "weights": int(weights),
        "lora+optimizer": int(lora_opt),
        "activations": int(saved),
        "workspace": int(step_workspace + slack + CUDA_CONTEXT_BYTES),
    }
    # Caching: the engine encodes images (one at a time, fp32 VAE) and captions with everything placed.
    enc_transient = VAE_ENCODE_BYTES_PER_PIXEL * resolution * resolution if cache_latents else 0
    cache_slack = int(ALLOCATOR_SLACK * enc_transient)
    caching = {
        "weights": int(vae_w + te_w),
        "lora+optimizer": 0,
        "activations": 0,
        "workspace": int(enc_transient + CUBLAS_WORKSPACE_BYTES + cache_slack + CUDA_CONTEXT_BYTES),
    }
    caching_peaks = (cache_latents or cache_text_encoder) and sum(caching.values()) > sum(training.values())
    if phase == "caching" or (phase == "peak" and caching_peaks):
        if caching_peaks:
            notes.append("the peak comes while encoding the images (VAE, text encoders and UNet on the GPU at once)")
        return Estimate(sum(caching.values()), caching, "caching", CUDA_CONTEXT_BYTES + cache_slack, tuple(notes))
    return Estimate(sum(training.values()), training, "training", CUDA_CONTEXT_BYTES + slack, tuple(notes))


def _gb(n: int | float) -> str:
    return f"{n / GB:.1f} GB"


def fit_report(estimate: Estimate, gpu_total_bytes: int) -> str:
    """One line: 'fits (≈ 5.2 GB of 8.0 GB)', 'tight (…)', or 'does not fit (…)'."""
    need = estimate.total_bytes
    if not gpu_total_bytes:
        return f"no GPU found: training would run on the CPU (≈ {_gb(need - estimate.overhead_bytes)} of RAM)"
    inside = f"≈ {_gb(need)} of {_gb(gpu_total_bytes)}"
    if need <= 0.9 * gpu_total_bytes:
        return f"fits ({inside})"
    if need <= gpu_total_bytes:
        return f"fits, tightly ({inside}; other programs using the GPU may push it over)"
    return f"does not fit ({inside})"


def fits(estimate: Estimate, gpu_total_bytes: int) -> bool:
    return bool(gpu_total_bytes) and estimate.total_bytes <= gpu_total_bytes
