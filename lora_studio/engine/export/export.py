"""Export a run's checkpoint as the LoRA file every Stable Diffusion UI loads, then prove it.

The trainer's checkpoint holds peft-style `<part>.<module path>.lora_A/B.weight` tensors in fp32. The
export renames them to kohya's `lora_unet_…` / `lora_te_…` names (see kohya.py and
shared/design/export-contract.md), adds one 0-dim `.alpha` per module, casts everything to one dtype,
writes the header metadata and hashes, and re-opens the file to check it against the base model.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import torch

from lora_studio.core.atomic import atomic_write
from lora_studio.core.errors import UserError
from lora_studio.core.runs import RunDir
from lora_studio.engine.export import kohya
from lora_studio.engine.training import checkpoint

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PARTS = ("unet", "te1", "te2")
THUMBNAIL_SIDE = 256


@dataclass
class ExportResult:
    path: Path
    step: int
    verified: bool
    problems: list[str]
    preview: Path | None
    checked_against: str = ""  # what the file was verified against, in words
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a newer checkpoint was damaged, so an older one was exported


# peft's tensor names (the checkpoint's) -> the file's, which are LyCORIS's (export-contract.md "LyCORIS files").
PEFT_SUFFIXES = {
    ".lora_A.weight": "lora_down.weight", ".lora_B.weight": "lora_up.weight", ".lora_magnitude_vector": "dora_scale",
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a", ".hada_w2_b": "hada_w2_b",
    ".lokr_w1": "lokr_w1", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2", ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b",
}


def _damaged(what: str) -> UserError:
    return UserError(f"The checkpoint's LoRA module {what}.", hint="The checkpoint is damaged; export another step.", code="bad_checkpoint")


def _module_tensors(name: str, t: dict[str, torch.Tensor], rank: int, alpha: float, dim: float) -> tuple[dict[str, torch.Tensor], float]:
    """One module's tensors as LyCORIS writes them, and the alpha to store beside them."""
    if "lora_down.weight" in t or "lora_up.weight" in t:
        if len({"lora_down.weight", "lora_up.weight"} & t.keys()) != 2:
            raise UserError(f"The checkpoint has only half of the LoRA module {name}.", hint="The checkpoint is damaged; export another step.", code="bad_checkpoint")
        down, up = t["lora_down.weight"], t["lora_up.weight"]
        if down.shape[0] != up.shape[1]:
            raise _damaged(f"{name} has mismatched ranks")
        out = {"lora_down.weight": down, "lora_up.weight": up}
        if "dora_scale" in t:
            # peft keeps the magnitude as [out] (Linear) or [1, out, 1, 1] (Conv2d); LyCORIS writes it along the
            # output axis with the weight's rank: [out, 1] / [out, 1, 1, 1] (ComfyUI's weight_decompose reads the
            # axis from dora_scale.shape[0] == out).
            out["dora_scale"] = t["dora_scale"].reshape(up.shape[0], *[1] * (down.dim() - 1))
        return out, alpha
    if "hada_w1_a" in t:
        if len({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} & t.keys()) != 4:
            raise _damaged(f"{name} lacks one of its four LoHa factors")
        return dict(t), alpha
    w1 = "lokr_w1" in t or {"lokr_w1_a", "lokr_w1_b"} <= t.keys()
    w2 = "lokr_w2" in t or {"lokr_w2_a", "lokr_w2_b"} <= t.keys()
    if not (w1 and w2):
        raise _damaged(f"{name} lacks one of its LoKr factors")
    out = dict(t)
    if "lokr_w1" in t and "lokr_w2" in t:
        # Both factors whole: LyCORIS and every loader apply no alpha / rank then (scale 1), while peft scales
        # by alpha / r; baked into w2 the file applies what was trained. The (unused) alpha is then the network
        # dim, as LyCORIS stores it.
        out["lokr_w2"] = t["lokr_w2"] * (alpha / rank)
        return out, dim
    return out, alpha


def to_kohya(lora: dict[str, torch.Tensor], model_kind: str, alpha: float, dtype: torch.dtype, net=None) -> dict[str, torch.Tensor]:
    """Trainer tensors (`unet.<path>.lora_A.weight` …) -> kohya/LyCORIS tensors, all in `dtype`, nothing else.

    `net` (the network the checkpoint was trained with, a NetworkConfig) gives each module its rank and alpha
    (conv_rank / conv_alpha on the 3x3 convolutions); without it every module is a LoRA at `alpha`."""
    from lora_studio.engine.training import lora as lora_mod

    modules: dict[str, dict[str, torch.Tensor]] = {}
    paths: dict[str, str] = {}
    for key, tensor in lora.items():
        part, _, rest = key.partition(".")
        for suffix, kohya_suffix in PEFT_SUFFIXES.items():
            if rest.endswith(suffix) and part in PARTS:
                try:
                    name = kohya.kohya_name(part, rest[: -len(suffix)], model_kind)
                except ValueError as e:  # e.g. a second text encoder in an SD1 checkpoint
                    raise UserError(f"The checkpoint does not match its model ({e}).", hint="Export a checkpoint of this run's own model.", code="bad_checkpoint") from None
                modules.setdefault(name, {})[kohya_suffix] = tensor
                paths[name] = rest[: -len(suffix)]
                break
        else:
            raise UserError(
                f"The checkpoint has a tensor this version cannot export: {key}.",
                hint="Export a checkpoint LoRA Studio wrote (one of the run's own checkpoints).",
                code="bad_checkpoint",
            )
    out: dict[str, torch.Tensor] = {}
    for name, tensors in sorted(modules.items()):
        rank, module_alpha = lora_mod.module_rank_alpha(paths[name], net) if net is not None else (1, alpha)
        written, stored_alpha = _module_tensors(name, tensors, rank, module_alpha, float(net.rank if net is not None else alpha))
        for suffix, tensor in written.items():
            out[f"{name}.{suffix}"] = tensor.detach().to("cpu", dtype).contiguous()
        # Loaders scale each module by alpha / rank (kohya LoRAModule, diffusers network_alphas); 0-dim, as
        # kohya saves its `alpha` buffer, in the file's one dtype.
        out[f"{name}.alpha"] = torch.tensor(float(stored_alpha), dtype=dtype)
    return out


def network_metadata(net) -> dict[str, str]:
    """`ss_network_module` / `ss_network_args` as kohya and LyCORIS write them: plain LoRA is kohya's
    `networks.lora` (no args); the rest is `lycoris.kohya` with its arguments as a JSON object of strings."""
    if net.type == "lora" and not net.uses_dora:
        return {"ss_network_module": "networks.lora"}
    args = {"algo": "locon" if net.type == "locon" else net.type}
    if net.type != "lora":
        args.update(conv_dim=str(net.conv_rank), conv_alpha=f"{net.conv_alpha:g}")
    if net.type == "lokr":
        args["factor"] = str(net.factor)
        if net.full_matrix:
            args["full_matrix"] = "True"
    if net.dropout:
        args["rank_dropout" if net.type in ("loha", "lokr") else "dropout"] = f"{net.dropout:g}"
    if net.uses_dora:
        args["dora_wd"] = "True"
    return {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps(args)}


def thumbnail_b64(png: Path, side: int = THUMBNAIL_SIDE) -> str:
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        im.thumbnail((side, side))
        buf = BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def preview_path(out: Path) -> Path:
    # A1111, Forge and the ComfyUI managers look for `<name>.preview.png` beside `<name>.safetensors`.
    return out.with_name(f"{out.stem}.preview.png")


def write_kohya(lora: dict[str, torch.Tensor], state: dict, cfg, out: Path, *, preview_src: Path | None, finished_at: float | None = None) -> Path:
    """Write `lora` as a kohya-format file at `out` (atomically), with metadata, hashes and preview."""
    from lora_studio.engine.tensor_files import save_safetensors

    out = Path(out)
    dtype = DTYPES.get(cfg.output.save_dtype)
    if dtype is None:
        raise UserError(f"output.save_dtype is {cfg.output.save_dtype!r}.", hint="Choose fp16, bf16 or fp32.", code="bad_config")
    from lora_studio.engine.training import lora as lora_mod

    _, alpha = kohya.network_rank_alpha(state, cfg)
    tensors = to_kohya(lora, state["model_kind"], alpha, dtype, net=lora_mod.network_from_state(state, cfg.network))
    finished_at = time.time() if finished_at is None else finished_at
    metadata = kohya.build_metadata(state, cfg, finished_at=finished_at, title=cfg.output.name)
    metadata.update(network_metadata(lora_mod.network_from_state(state, cfg.network)))
    # Computed before the cover image is added, on the ss_* metadata only, as kohya's save_weights does.
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = kohya.precalculate_hashes(tensors, metadata)
    if preview_src is not None:
        preview_src = Path(preview_src)
        metadata["ssmd_cover_images"] = json.dumps([thumbnail_b64(preview_src)])
        atomic_write(preview_path(out), lambda tmp: shutil.copyfile(preview_src, tmp))
    atomic_write(out, lambda tmp: save_safetensors(tensors, tmp, metadata))
    return out


# --- runs ----------------------------------------------------------------------------------------

def checkpoint_steps(run_dir: Path) -> list[int]:
    return [step for step, _ in checkpoint.list_checkpoints(run_dir)]


def newest_sample(run_dir: Path, step: int) -> Path | None:
    """The newest sample image at or before `step` (its first prompt), for the preview."""
    earlier = [s for s in RunDir(run_dir).sample_files() if s.step <= step]
    return max(earlier, key=lambda s: (s.step, -s.index, -s.seed)).path if earlier else None


def default_out(run_dir: Path, cfg, state: dict) -> Path:
    # The end-of-run file is `<name>.safetensors`; any earlier step says which one it is.
    last = state["step"] >= state.get("max_steps", cfg.train.max_steps)
    return RunDir(run_dir).export_file(cfg.output.name, None if last else state["step"])


def _load_run(run_dir: Path, step: int | None):
    """(run config, state, LoRA weights, step, warnings) of the checkpoint to export: `step`, or the newest
    intact one (with a warning for each newer damaged one). A damaged `step` is refused: it says so."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    if not run.is_run():
        raise UserError(f"{run_dir} is not a training run (it has no {run.config.name}).", hint="Pass the run folder, e.g. MyStyle/runs/<run-id>.", code="not_a_run")
    found = dict(checkpoint.list_checkpoints(run_dir))
    if not found:
        raise UserError(f"The run {run_dir} has no checkpoints yet.", hint="Let training reach its first checkpoint (train.checkpoint_every), or press Save now.", code="no_checkpoints")
    if step is not None and step not in found:
        raise UserError(f"The run has no checkpoint at step {step}.", hint=f"Available steps: {', '.join(map(str, sorted(found)))}.", code="unknown_step")
    cfg = run.load_config()
    if step is not None:
        try:
            saved = checkpoint.load(found[step], weights_only=True)
        except checkpoint.DamagedCheckpoint as e:
            others = ", ".join(str(s) for s in sorted(found) if s != step) or "none"
            raise UserError(f"The checkpoint at step {step} cannot be exported because it is damaged: {e.reason}.",
                            hint=f"Export another step (the run has {others}).", code="damaged_checkpoint") from None
        return cfg, saved.state, saved.lora, step, []
    intact = checkpoint.newest_intact(run_dir, weights_only=True)
    return cfg, intact.saved.state, intact.saved.lora, intact.step, intact.fallback_warnings("the export is of")


def export_run(run_dir: Path, step: int | None = None, out: Path | None = None, *, reference=None) -> ExportResult:
    """Export a checkpoint (the newest by default) and verify the file against `reference`
    (kohya name -> shapes, see verify.reference_modules) or else the run's base model."""
    from lora_studio.engine.export import verify

    cfg, state, lora, step, warnings = _load_run(Path(run_dir), step)
    out = Path(out) if out is not None else default_out(Path(run_dir), cfg, state)
    if out.suffix != ".safetensors":
        raise UserError(f"{out} does not end in .safetensors.", hint="UIs only list .safetensors LoRA files; name it <name>.safetensors.", code="bad_output")
    preview_src = newest_sample(Path(run_dir), step)
    write_kohya(lora, state, cfg, out, preview_src=preview_src)
    notes: list[str] = []
    if reference is not None:
        against = "the given reference model"
    else:
        reference, against, notes = verify.reference_for_run(state)
    problems = verify.verify_file(out, reference)
    return ExportResult(out, step, not problems, problems, preview_path(out) if preview_src else None, against, notes, warnings)


def export_command(run_dir: Path, *, step: int | None = None, out: Path | None = None) -> int:
    """`lora-studio export RUN_DIR [--step N] [--out FILE]`: 0 when the file is written and verified."""
    result = export_run(Path(run_dir), step, out)
    print(result.path)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.verified:
        print(f"verified: step {result.step}, every key places on a module of {result.checked_against} with the right shape")
        return 0
    print(f"NOT verified: step {result.step}, checked against {result.checked_against}:")
    for p in result.problems:
        print(f"  - {p}")
    return 1


def export_events_command(run_dir: Path, *, step: int | None = None, out: Path | None = None) -> int:
    """`lora-studio export … --events`: the result as one protocol event on stdout (`exported`, or `error`
    for a mistake the artist can fix), the way the app reads the engine; 0 when a file was written."""
    from lora_studio.core import events as ev

    stream, sys.stdout = sys.stdout, sys.stderr  # library prints must not corrupt the stream
    try:
        r = export_run(Path(run_dir), step, out)
        for warning in r.warnings:  # an older checkpoint was exported because a newer one is damaged
            print(ev.Warning(warning, code="damaged_checkpoint").to_json(), file=stream, flush=True)
        event: ev.Event = ev.Exported(str(r.path), r.step, r.verified, list(r.problems), str(r.preview or ""))
    except UserError as e:
        event = ev.Error(e.code, e.message, e.hint)
    finally:
        sys.stdout = stream
    print(event.to_json(), flush=True)
    return 0 if isinstance(event, ev.Exported) else 1
