"""What to do with the fit estimate for a run's settings: the estimate for a Config, the settings that fit
(nearest first), the next smaller settings after an out-of-memory error, and the words `--dry-run` and the
app's Settings tab show. The memory model itself is `core.fit`; what the base model is, `core.model_files`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lora_studio.core.fit import Estimate, _gb, _resolve_precision, estimate_peak_bytes, fit_report, fits, network_params
from lora_studio.core.model_files import guess_kind, nonstandard_size


def estimate_for_config(cfg: Any, *, on_gpu: bool = True) -> Estimate:
    """The estimate for a run's settings. "auto" precision resolves as the trainer does: bf16 on a GPU, fp32 on
    a CPU (where the estimate is of RAM)."""
    t, n = cfg.train, cfg.network
    mixed = t.mixed_precision if (on_gpu or t.mixed_precision != "auto") else "no"
    return estimate_peak_bytes(
        guess_kind(cfg), t.resolution, t.batch_size, n.rank,
        gradient_checkpointing=t.gradient_checkpointing, base_weights=t.base_weights,
        train_text_encoder=n.train_text_encoder, cache_latents=t.cache_latents,
        cache_text_encoder=t.cache_text_encoder, mixed_precision=mixed,
        targets=n.targets, optimizer=t.optimizer, network_type=n.type, conv_rank=n.conv_rank, dora=n.uses_dora,
        factor=n.factor, full_matrix=n.full_matrix, ema_on_device=t.ema and not t.ema_on_cpu,
    )


LADDER_IN_WORDS = "checkpointing, fp8 weights, batch 1, 256 px"  # the ladder's furthest rungs, for messages


def with_changes(cfg: Any, changes: dict[str, Any]) -> Any:
    """`cfg` with {"section.key": value} changes applied (what the suggestions and an OOM's fix carry)."""
    return cfg.with_changes(changes)


def _ladder(cfg: Any, *, on_gpu: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """The changes that save memory, cheapest in quality and speed first. On a CPU the 16-bit and fp8
    storage steps are left out: there they save little and make every step several times slower."""
    t = cfg.train
    steps: list[tuple[str, dict[str, Any]]] = []
    if not t.gradient_checkpointing:
        steps.append(("turn on gradient checkpointing (about 25 % slower)", {"train.gradient_checkpointing": True}))
    mixed, base = _resolve_precision(t.mixed_precision, t.base_weights)
    if on_gpu and base == "fp32":
        steps.append(("store the base weights in bf16", {"train.base_weights": "bf16", "train.mixed_precision": "bf16" if mixed == "no" else mixed}))
    if on_gpu and base != "fp8":
        # fp8 storage saves memory only with gradient checkpointing (see Arch.fp8_upcast_ckpt): the two go together.
        steps.append(("store the base weights in fp8", {"train.base_weights": "fp8", "train.gradient_checkpointing": True}))
    if not t.cache_latents:
        steps.append(("cache the latents", {"train.cache_latents": True}))
    batch = t.batch_size
    while batch > 1:
        batch = max(1, batch // 2)
        accumulation = t.gradient_accumulation * max(1, t.batch_size // batch)
        steps.append((f"lower the batch size to {batch} (gradient accumulation {accumulation} keeps the effective batch)",
                      {"train.batch_size": batch, "train.gradient_accumulation": accumulation}))
    for lower in (1024, 896, 768, 640, 512, 384, 256):
        if lower < t.resolution:
            steps.append((f"lower the resolution to {lower} px", {"train.resolution": lower}))
    return steps


def suggest_settings(cfg: Any, gpu_total_bytes: int) -> list[tuple[str, dict[str, Any]]]:
    """Settings that fit, nearest first: [(description, {"section.key": value})]. [] when the run already fits,
    when there is no GPU, or when nothing on the ladder fits.

    The first suggestion walks the ladder (gradient checkpointing, bf16 then fp8 base weights, caching the
    latents, halving the batch, lowering the resolution) and keeps every step until the estimate fits; then
    each single step that fits on its own follows, as an alternative."""
    if not gpu_total_bytes or nonstandard_size(cfg) or fits(estimate_for_config(cfg), gpu_total_bytes):
        return []
    ladder = _ladder(cfg)
    out: list[tuple[str, dict[str, Any]]] = []
    taken: list[str] = []
    changes: dict[str, Any] = {}
    for description, step in ladder:
        changes.update(step)
        taken.append(description)
        est = estimate_for_config(with_changes(cfg, changes))
        if fits(est, gpu_total_bytes):
            out.append((f"{' and '.join(_dedupe(taken))} (≈ {_gb(est.total_bytes)} of {_gb(gpu_total_bytes)})", dict(changes)))
            break
    kinds_taken: set[str] = set()
    for description, step in ladder:
        kind_of_change = description.split(" to ")[0]  # "lower the resolution", "lower the batch size", ...
        if kind_of_change in kinds_taken:
            continue
        est = estimate_for_config(with_changes(cfg, step))
        if fits(est, gpu_total_bytes) and all(step != ch for _, ch in out):
            kinds_taken.add(kind_of_change)
            out.append((f"{description} (≈ {_gb(est.total_bytes)} of {_gb(gpu_total_bytes)})", dict(step)))
    return out


def next_smaller_settings(cfg: Any, gpu_total_bytes: int, *, on_gpu: bool = True) -> tuple[str, dict[str, Any]] | None:
    """What to change after a run ran out of memory: the nearest settings the estimate says fit, or, where
    the estimate cannot help (on a CPU, or the estimate said it fit and the GPU disagreed: another program
    held memory), the next single step down the ladder. Following it after each failure walks the whole
    ladder, so a run that can fit at all gets there. None when nothing is left to lower."""
    if on_gpu and gpu_total_bytes:
        suggestions = suggest_settings(cfg, gpu_total_bytes)
        if suggestions:
            return suggestions[0]
    ladder = _ladder(cfg, on_gpu=on_gpu)
    if not ladder:
        return None
    description, changes = ladder[0]
    return description, dict(changes)


def _dedupe(descriptions: list[str]) -> list[str]:
    # "lower the batch size to 2 … and lower the batch size to 1 …" reads as the last one only.
    out: list[str] = []
    for d in descriptions:
        head = d.split(" to ")[0]
        out = [o for o in out if o.split(" to ")[0] != head]
        out.append(d)
    return out


def dry_run_report(cfg: Any, gpu_total_bytes: int) -> str:
    """What `lora-studio train --dry-run` prints about memory: the estimate, its parts, the verdict, the fixes."""
    note = nonstandard_size(cfg)
    if note:
        where = "on the GPU" if gpu_total_bytes else "on the CPU (no GPU found)"
        return f"Memory estimate: none: {note}.\nOn this machine: training would run {where}."
    est = estimate_for_config(cfg, on_gpu=bool(gpu_total_bytes))
    parts = ", ".join(f"{k} {_gb(v)}" for k, v in est.parts.items())
    n = cfg.network
    net = {"lora": "LoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr"}.get(n.type, n.type) + (" with DoRA" if n.uses_dora else "")
    trainable = network_params(guess_kind(cfg), n.rank, network_type=n.type, targets=n.targets, conv_rank=n.conv_rank, dora=n.uses_dora,
                               factor=n.factor, full_matrix=n.full_matrix, train_text_encoder=n.train_text_encoder)
    lines = [f"Memory estimate ({guess_kind(cfg)}, {cfg.train.resolution} px, batch {cfg.train.batch_size}): "
             f"≈ {_gb(est.total_bytes)} at the {est.phase} peak ({parts}).",
             f"Network: {net}, {trainable / 1e6:.2f} M trainable parameters.",
             f"On this machine: {fit_report(est, gpu_total_bytes)}."]
    lines += [f"Note: {n}." for n in est.notes]
    suggestions = suggest_settings(cfg, gpu_total_bytes)
    if gpu_total_bytes and not suggestions and not fits(est, gpu_total_bytes):
        lines.append(f"No settings on the usual ladder ({LADDER_IN_WORDS}) fit this GPU.")
    if suggestions:
        lines.append("Settings that fit (the first is the nearest):")
        lines += [f"  - {desc}: " + ", ".join(f"{k} = {v!r}" for k, v in ch.items()) for desc, ch in suggestions]
    return "\n".join(lines)


@dataclass(frozen=True)
class MemorySummary:
    """The Settings tab's memory line: the words, the verdict, and the nearest settings that fit."""

    text: str
    verdict: str  # fits | tight | does_not_fit | cpu | unknown
    fix: tuple[str, dict[str, Any]] | None = None


def memory_summary(cfg: Any, gpu_total_bytes: int, gpu_name: str = "") -> MemorySummary:
    """The same estimate and verdict as --dry-run, in one or two sentences for the app."""
    note = nonstandard_size(cfg)
    if note:
        where = "" if gpu_total_bytes else " No NVIDIA GPU found: training would run on the CPU."
        return MemorySummary(f"No memory estimate: {note}.{where}", "unknown")
    if not gpu_total_bytes:
        est = estimate_for_config(cfg, on_gpu=False)
        return MemorySummary(f"No NVIDIA GPU found: training would run on the CPU, many times slower "
                             f"(≈ {_gb(est.total_bytes - est.overhead_bytes)} of RAM).", "cpu")
    est = estimate_for_config(cfg)
    on = f" on {gpu_name}" if gpu_name else ""
    verdict = fit_report(est, gpu_total_bytes)
    said = f"{verdict[0].upper()}{verdict[1:]}{on}"
    if fits(est, gpu_total_bytes):
        return MemorySummary(f"{said}.", "tight" if verdict.startswith("fits, tightly") else "fits")
    suggestions = suggest_settings(cfg, gpu_total_bytes)
    if not suggestions:
        return MemorySummary(f"{said}, and no usual setting ({LADDER_IN_WORDS}) makes it fit.", "does_not_fit")
    description, changes = suggestions[0]
    return MemorySummary(f"{said}. Nearest that fits: {description}.", "does_not_fit", (description, changes))
