"""`lora-studio compare RUN_DIR`: a grid to choose the result (checkpoints x LoRA strengths x trigger on/off).

Every cell of one prompt uses the same seed and the run's own sample settings, so the only thing that
differs between two cells is the LoRA. The base model is loaded once and the adapter injected once;
each checkpoint only swaps the adapter weights, each strength only sets peft's scale. The baseline (step 0,
strength 0) is the same model with every scale at 0, which is exactly the base model.

Output: a folder `<YYYYmmdd-HHMMSS>/` in the run's comparisons (core/runs.py) with one PNG per cell
(`step_000200_s1.00_t1_p0.png`), the grid file rewritten after every cell (a stopped grid is still
readable) and the grid's own event log.
Events on stdout as `lora-studio train` writes them: status, compare_cell per image, finished.

`--rank` then scores the grid's checkpoints from its own cells (strength 1 with the trigger, against the
baseline row; engine/evaluate/rank.py, judged by the same model with every LoRA scale at 0) and writes the
recommendation into the grid's folder and the run's ranking file, with a `ranking` event and the sentence
on stderr. `--rank-samples` ranks the run's own samples instead, rendering nothing.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from lora_studio.core import events as ev
from lora_studio.core.atomic import atomic_write, atomic_write_text
from lora_studio.core.captions import join_tags, remove_trigger, split_tags
from lora_studio.core.dataset import scan
from lora_studio.core.errors import UserError
from lora_studio.core.images import load_rgb
from lora_studio.core.ranking import Recommendation
from lora_studio.core.runs import CONFIG_FILE, RunDir, grid_file, ranking_file
from lora_studio.engine.process import StdinCommands, StreamSink, event_process

ADAPTER = "default"  # the name lora.add_lora's inject_adapter_in_model gives the adapter
RANK_STRENGTH = 1.0  # the ranking scores each checkpoint as trained, as the run's own samples show it


def cell_name(step: int, strength: float, trigger: bool, prompt_index: int) -> str:
    # Two decimals keep names sortable; a finer strength keeps all its digits rather than colliding.
    s = f"{strength:.2f}" if round(strength, 2) == strength else f"{strength:g}"
    return f"step_{step:06d}_s{s}_t{int(trigger)}_p{prompt_index}.png"


def checked_run(run_dir: Path):
    """(run config, its complete checkpoints); a UserError when the folder is no run or has none."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise UserError(f"{run_dir} is not a training run (it has no {run.config.name}).",
                        hint="Pass a folder under the project's runs/.", code="not_a_run")
    available = run.checkpoints()
    if not available:
        raise UserError(f"The run {Path(run_dir).name} has no checkpoints yet.", hint="Train it first (checkpoints are saved as it trains).",
                        code="no_checkpoints")
    return run.load_config(), available


def check_training_images(cfg) -> None:
    # The style score places each checkpoint between the base model's look and the training images'.
    try:
        found = bool(scan(cfg.dataset).items)
    except UserError:  # no such folder: scan's hint names the Dataset tab, not this run's settings
        found = False
    if not found:
        raise UserError(f"The run's training images are not in {cfg.dataset.path} any more, and ranking compares "
                        "the checkpoints with them.", hint="Put them back there (or set dataset.path in the run's "
                        f"{CONFIG_FILE} to where they are now).", code="no_training_images")


def plan(run_dir: Path, *, steps=None, strengths=None, prompts=None, trigger_variants=True, seed=None, sampling_steps=None,
         rank=False):
    """(run config, [(step, CheckpointDir)], cells in render order, settings). Checks everything the
    artist can get wrong before the model is loaded, so a typo fails in a second. A cell's path is its file
    name alone: the grid's folder is made only when rendering starts."""
    cfg, available = checked_run(run_dir)
    by_step = {c.step: c for c in available}
    if steps:
        unknown = [s for s in steps if s not in by_step]
        if unknown:
            raise UserError(f"The run has no checkpoint at step {', '.join(map(str, unknown))}.",
                            hint=f"Available steps: {', '.join(map(str, by_step))}.", code="unknown_step")
    chosen = [(s, by_step[s]) for s in sorted(set(steps or by_step))]
    # Strength 0 is the base model whatever the checkpoint: the baseline row already shows it.
    strengths = list(dict.fromkeys(float(s) for s in (strengths if strengths is not None else [0.5, 1.0]) if s != 0))
    if not strengths:
        raise UserError("No LoRA strength to compare.", hint="Pass --strengths 0.5,1.0 (0 is the baseline, always shown).",
                        code="no_strengths")
    if rank:
        if RANK_STRENGTH not in strengths:
            raise UserError(f"--rank scores the checkpoints at strength {RANK_STRENGTH:g}, which --strengths leaves out.",
                            hint=f"Add {RANK_STRENGTH:g} to --strengths, or rank the run's own samples with --rank-samples.",
                            code="no_rank_strength")
        check_training_images(cfg)
    prompts = list(prompts or cfg.sample.prompts)
    if not prompts:
        raise UserError("There is no prompt to render.", hint="Set sample prompts in the run's settings or pass --prompt \"...\".",
                        code="no_prompts")
    trigger = cfg.output.trigger.strip()
    base_seed = cfg.sample.seed if seed is None else seed
    rows = []  # (prompt_index, prompt, trigger, seed)
    for i, prompt in enumerate(prompts):
        rows.append((i, prompt, True, base_seed + i))  # the seed rule of the run's samples: seed + prompt index
        without = remove_trigger(prompt, trigger) if trigger else prompt
        if trigger_variants and trigger and without != join_tags(split_tags(prompt)):
            rows.append((i, without, False, base_seed + i))
    columns = [(0, 0.0)] + [(s, k) for s, _ in chosen for k in strengths]
    cells = [ev.CompareCell(s, k, t, i, p, sd, cell_name(s, k, t, i)) for s, k in columns for i, p, t, sd in rows]
    settings = {
        "steps": [s for s, _ in chosen], "strengths": strengths, "prompts": prompts, "trigger": trigger,
        "trigger_variants": trigger_variants, "seed": base_seed, "sampling_steps": sampling_steps or cfg.sample.steps,
        "negative_prompt": cfg.sample.negative_prompt, "guidance_scale": cfg.sample.guidance_scale,
        "width": cfg.sample.width or cfg.train.resolution, "height": cfg.sample.height or cfg.train.resolution,
        "clip_skip": cfg.model.clip_skip, "sampler": "DPM++ 2M", "base_model": cfg.model.base,
    }
    return cfg, chosen, cells, settings


def _new_dir(root: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 100):
        out = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            continue  # two grids in one second
    raise UserError(f"Cannot create a new folder in {root}.", code="no_output_dir")


def _verified(chosen, *, explicit: bool, sink: StreamSink):
    """({step: LoRA weights}, the first one's state) of the chosen checkpoints that verify (checkpoint.load:
    their manifest, readable tensors, finite values). A damaged one asked for by --steps stops the grid; one
    that is merely in the run is left out with a warning naming it, as resume and export fall back."""
    from lora_studio.engine.training import checkpoint

    weights, states = {}, {}
    for step, ckpt in chosen:
        try:
            saved = checkpoint.load(ckpt.path, weights_only=True)
        except checkpoint.DamagedCheckpoint as e:
            if explicit:
                raise
            sink.emit(ev.Warning(f"{e.message[:-1]}, so it is left out of the grid.", code="damaged_checkpoint"))
            continue
        weights[step], states[step] = saved.lora, saved.state
    if not weights:
        raise checkpoint.NoIntactCheckpoint("Every checkpoint of the run is damaged, so there is nothing to compare.",
                                            hint="Start a new run; the damaged checkpoints are left as they are.")
    return weights, states[next(iter(states))]


def _set_strength(modules, strength: float) -> None:
    from lora_studio.engine.training import lora

    lora.set_strength(modules, strength, ADAPTER)  # absolute: strength x alpha / rank, 1.0 = as trained, 0 = the base


def _load_base(cfg):
    """The base model on the device, in the precision the run trained and sampled in: (models, compute dtype)."""
    import torch

    from lora_studio.engine.models.load import load_models
    from lora_studio.engine.training.step import resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mixed, dtype = resolve_precision(cfg, device)
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)
    if dtype == torch.float8_e4m3fn:
        dtype = compute  # fp8 storage is a training-memory trick; sampling alone fits in the compute dtype
    # The run's own zero-terminal-SNR decision, so the grid samples as its samples did (trailing spacing).
    models = load_models(cfg.model, dtype, zero_terminal_snr=cfg.train.zero_terminal_snr)
    for m in (models.unet, *models.text_encoders):
        m.to(device)
    models.vae.to(device)  # load_models keeps it fp32, as the trainer does: SDXL's VAE overflows in fp16
    return models, compute


def _render(run_dir: Path, sink: StreamSink, commands: StdinCommands, *, rank=False, **options) -> str:
    import torch

    from lora_studio.engine.training import lora, sampling

    cfg, chosen, cells, settings = plan(run_dir, rank=rank, **options)
    weights, state = _verified(chosen, explicit=bool(options.get("steps")), sink=sink)
    if len(weights) < len(chosen):
        cells = [c for c in cells if not c.step or c.step in weights]
        chosen = [(s, c) for s, c in chosen if s in weights]
        settings["steps"] = [s for s, _ in chosen]
    if "stop" in commands.poll():
        return "stopped"  # before the model loads (seconds to minutes) and before any folder is made
    out_dir = _new_dir(RunDir(run_dir).compare_dir)
    sink.attach_run_dir(out_dir)  # the grid keeps its own log; the run's own stays the training's
    settings.update(model_kind=state.get("model_kind", ""), rank=state["rank"], alpha=state["alpha"])
    grid = {"version": 1, "run_dir": str(run_dir), "status": "running", "settings": settings, "cells": []}
    sink.emit(ev.Status("loading", "Loading the base model"))
    models, compute = _load_base(cfg)
    unet, tes, device = models.unet, models.text_encoders, models.unet.device
    # Injected after the move, as the trainer does, so the adapter stays fp32 on a bf16 base.
    net = lora.network_from_state(state, cfg.network)  # the type, ranks and alphas the checkpoints were trained with
    lora.add_lora(unet, lora.unet_network(unet, net))
    has_te = any(k.split(".", 1)[0] in lora.TE_PARTS for k in weights[chosen[0][0]])
    if has_te:
        for te in tes:
            lora.add_lora(te, lora.text_encoder_network(net))
    modules = [unet, *tes, models.vae]
    pipe = sampling.build_pipeline(models, unet, tes)
    pipe.set_progress_bar_config(disable=True)
    autocast = (lambda: torch.autocast(device.type, dtype=compute)) if compute != torch.float32 else contextlib.nullcontext

    status, loaded, made_cells = "failed", None, []  # what the grid file says if a cell raises
    try:
        for n, cell in enumerate(cells, 1):
            if "stop" in commands.poll():
                status = "stopped"
                break
            if cell.step and cell.step != loaded:
                lora.load_lora_state(weights[cell.step], unet, tes if has_te else None)
                loaded = cell.step
            _set_strength([unet, *tes], cell.strength)
            sink.emit(ev.Status("sampling", f"Rendering cell {n} of {len(cells)}"))
            # Each cell starts from the same global state, so no cell depends on the ones before it.
            with torch.no_grad(), sampling.preserved_state(modules), autocast():
                for m in modules:
                    m.eval()
                image = pipe(
                    cell.prompt, negative_prompt=settings["negative_prompt"] or None, num_inference_steps=settings["sampling_steps"],
                    guidance_scale=settings["guidance_scale"], guidance_rescale=sampling.guidance_rescale(models),
                    width=settings["width"], height=settings["height"],
                    generator=torch.Generator(device="cpu").manual_seed(cell.seed), clip_skip=(cfg.model.clip_skip - 1) or None,
                ).images[0]
            made = replace(cell, path=str(out_dir / cell.path), time=time.time())  # the event's time is when it was made
            atomic_write(Path(made.path), lambda tmp: image.save(tmp, format="PNG"))
            grid["cells"].append(made.grid_entry(out_dir))
            atomic_write_text(grid_file(out_dir), json.dumps(grid, indent=1))
            sink.emit(made)
            made_cells.append(made)
        else:
            status = "completed"
        if rank and status == "completed":
            _rank_grid(Path(run_dir), out_dir, cfg, settings["prompts"], made_cells, models, [unet, *tes], sink)
    finally:
        grid["status"] = status
        atomic_write_text(grid_file(out_dir), json.dumps(grid, indent=1))
        del pipe, unet, tes, modules, models
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return status


def _rank_grid(run_dir: Path, out_dir: Path, cfg, prompts: list[str], cells: list[ev.CompareCell], models,
               lora_modules, sink: StreamSink) -> None:
    """Rank the grid's checkpoints by its own cells: the baseline row against each checkpoint as trained."""
    import torch

    from lora_studio.engine.evaluate import rank

    sink.emit(ev.Status("sampling", "Scoring the checkpoints (style, prompts, validation loss)"))
    pictures: dict[int, list] = {}
    for c in cells:
        if c.trigger and (c.step == 0 or c.strength == RANK_STRENGTH):
            pictures.setdefault(c.step, []).append((load_rgb(c.path), c.prompt_index))
    validation = rank.validation_losses(RunDir(run_dir).events)
    # The judge is the base model: the same modules with every LoRA scale at 0.
    with rank.base_model(lora_modules), torch.no_grad():
        rec = rank.score_steps(models, cfg, pictures, prompts, rank.training_pictures(cfg), validation)
    _publish(rec, run_dir, sink, grid_dir=out_dir)


def _rank_samples(run_dir: Path, sink: StreamSink) -> str:
    """Rank the run's checkpoints by the samples it made while training; nothing is rendered."""
    from lora_studio.engine.evaluate import rank

    cfg, available = checked_run(run_dir)
    check_training_images(cfg)
    sink.emit(ev.Status("loading", "Loading the base model"))
    models, _ = _load_base(cfg)  # no LoRA injected: exactly the base model, the judge
    sink.emit(ev.Status("sampling", "Scoring the checkpoints (style, prompts, validation loss)"))
    rec = rank.rank_samples(models, cfg, RunDir(run_dir).samples_dir, [c.step for c in available],
                            validation=rank.validation_losses(RunDir(run_dir).events))
    if rec is None:
        raise UserError("The run's samples cannot rank its checkpoints: it needs the step-0 samples and samples at "
                        "a kept checkpoint's step.", hint=f"Render a grid and rank it instead: lora-studio compare "
                        f"{run_dir} --rank", code="no_samples_to_rank")
    _publish(rec, run_dir, sink)
    return "completed"


def _publish(rec: Recommendation, run_dir: Path, sink: StreamSink, grid_dir: Path | None = None) -> None:
    """The recommendation in the run's ranking file (what the app marks), the grid's, the events and stderr."""
    from lora_studio.engine.evaluate import rank

    written = [rank.save_ranking(run_dir, rec)]
    if grid_dir is not None:
        written.append(ranking_file(grid_dir))
        atomic_write_text(written[-1], json.dumps(rec.to_json(), indent=1))
    sink.emit(rank.to_event(rec))
    print(f"Recommended: {rec.sentence}\n  written to {', '.join(map(str, written))}", file=sys.stderr)


def compare_command(run_dir: Path, *, steps=None, strengths=None, prompts=None, trigger_variants=True, seed=None,
                    sampling_steps=None, rank=False, rank_samples=False) -> int:
    def body(sink: StreamSink) -> int:
        if rank_samples:
            status = _rank_samples(Path(run_dir), sink)
        else:
            status = _render(Path(run_dir), sink, StdinCommands(), steps=steps, strengths=strengths, prompts=prompts,
                             trigger_variants=trigger_variants, seed=seed, sampling_steps=sampling_steps, rank=rank)
        sink.emit(ev.Finished(status, 0))
        return 0

    def oom(on_gpu: bool) -> ev.Error:
        where = "The GPU" if on_gpu else "The computer"
        return ev.Error("out_of_memory", f"{where} ran out of memory while rendering the grid.",
                        "Close other programs using the GPU, or lower sample.width / sample.height in the run's settings.")

    return event_process(body, what="The comparison", oom=oom)
