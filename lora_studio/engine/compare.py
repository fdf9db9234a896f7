"""`lora-studio compare RUN_DIR`: a grid to choose the result (checkpoints x LoRA strengths x trigger on/off).

Every cell of one prompt uses the same seed and the run's own sample settings, so the only thing that
differs between two cells is the LoRA. The base model is loaded once and the adapter injected once;
each checkpoint only swaps the adapter weights, each strength only sets peft's scale. The baseline (step 0,
strength 0) is the same model with every scale at 0, which is exactly the base model.

Output: a folder `<YYYYmmdd-HHMMSS>/` in the run's comparisons (core/runs.py) with one PNG per cell
(`step_000200_s1.00_t1_p0.png`), the grid file rewritten after every cell (a stopped grid is still
readable) and the grid's own event log.
Events on stdout as `lora-studio train` writes them: status, compare_cell per image, finished.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from dataclasses import replace
from pathlib import Path

from lora_studio.core import events as ev
from lora_studio.core.atomic import atomic_write, atomic_write_text
from lora_studio.core.captions import join_tags, remove_trigger, split_tags
from lora_studio.core.errors import UserError
from lora_studio.core.runs import RunDir, grid_file
from lora_studio.engine.process import StdinCommands, StreamSink, event_process

ADAPTER = "default"  # the name lora.add_lora's inject_adapter_in_model gives the adapter


def cell_name(step: int, strength: float, trigger: bool, prompt_index: int) -> str:
    # Two decimals keep names sortable; a finer strength keeps all its digits rather than colliding.
    s = f"{strength:.2f}" if round(strength, 2) == strength else f"{strength:g}"
    return f"step_{step:06d}_s{s}_t{int(trigger)}_p{prompt_index}.png"


def plan(run_dir: Path, *, steps=None, strengths=None, prompts=None, trigger_variants=True, seed=None, sampling_steps=None):
    """(run config, [(step, CheckpointDir)], cells in render order, settings). Checks everything the
    artist can get wrong before the model is loaded, so a typo fails in a second. A cell's path is its file
    name alone: the grid's folder is made only when rendering starts."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise UserError(f"{run_dir} is not a training run (it has no {run.config.name}).",
                        hint="Pass a folder under the project's runs/.", code="not_a_run")
    cfg = run.load_config()
    available = run.checkpoints()
    if not available:
        raise UserError(f"The run {run_dir.name} has no checkpoints yet.", hint="Train it first (checkpoints are saved as it trains).",
                        code="no_checkpoints")
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


def _set_strength(modules, strength: float) -> None:
    from peft.tuners.lora import LoraLayer

    for module in modules:
        for layer in module.modules():
            if isinstance(layer, LoraLayer):
                layer.set_scale(ADAPTER, strength)  # absolute: strength x alpha / rank, 1.0 = as trained


def _render(run_dir: Path, sink: StreamSink, commands: StdinCommands, **options) -> str:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from lora_studio.engine.models.load import load_models
    from lora_studio.engine.training import lora, sampling
    from lora_studio.engine.training.step import resolve_precision

    cfg, chosen, cells, settings = plan(run_dir, **options)
    if "stop" in commands.poll():
        return "stopped"  # before the model loads (seconds to minutes) and before any folder is made
    out_dir = _new_dir(RunDir(run_dir).compare_dir)
    sink.attach_run_dir(out_dir)  # the grid keeps its own log; the run's own stays the training's
    state = json.loads(chosen[0][1].state.read_text(encoding="utf-8"))
    settings.update(model_kind=state.get("model_kind", ""), rank=state["rank"], alpha=state["alpha"])
    grid = {"version": 1, "run_dir": str(run_dir), "status": "running", "settings": settings, "cells": []}
    sink.emit(ev.Status("loading", "Loading the base model"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mixed, dtype = resolve_precision(cfg, device)  # the precision the run trained and sampled in
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)
    if dtype == torch.float8_e4m3fn:
        dtype = compute  # fp8 storage is a training-memory trick; sampling alone fits in the compute dtype
    models = load_models(cfg.model, dtype)
    unet, tes = models.unet.to(device), [te.to(device) for te in models.text_encoders]
    models.vae.to(device)  # load_models keeps it fp32, as the trainer does: SDXL's VAE overflows in fp16
    # Injected after the move, as the trainer does, so the adapter stays fp32 on a bf16 base.
    net = lora.lora_config(state["rank"], state["alpha"], lora.unet_targets(cfg.network.targets))
    lora.add_lora(unet, net)
    with safe_open(chosen[0][1].lora, "pt") as f:
        has_te = any(k.split(".", 1)[0] in lora.TE_PARTS for k in f.keys())
    if has_te:
        for te in tes:
            lora.add_lora(te, lora.lora_config(state["rank"], state["alpha"], lora.TEXT_ENCODER))
    modules = [unet, *tes, models.vae]
    pipe = sampling.build_pipeline(models, unet, tes)
    pipe.set_progress_bar_config(disable=True)
    autocast = (lambda: torch.autocast(device.type, dtype=compute)) if compute != torch.float32 else contextlib.nullcontext

    status, loaded = "failed", None  # what the grid file says if a cell raises
    try:
        for n, cell in enumerate(cells, 1):
            if "stop" in commands.poll():
                status = "stopped"
                break
            if cell.step and cell.step != loaded:
                lora.load_lora_state(load_file(dict(chosen)[cell.step].lora), unet, tes if has_te else None)
                loaded = cell.step
            _set_strength([unet, *tes], cell.strength)
            sink.emit(ev.Status("sampling", f"Rendering cell {n} of {len(cells)}"))
            # Each cell starts from the same global state, so no cell depends on the ones before it.
            with torch.no_grad(), sampling.preserved_state(modules), autocast():
                for m in modules:
                    m.eval()
                image = pipe(
                    cell.prompt, negative_prompt=settings["negative_prompt"] or None, num_inference_steps=settings["sampling_steps"],
                    guidance_scale=settings["guidance_scale"], width=settings["width"], height=settings["height"],
                    generator=torch.Generator(device="cpu").manual_seed(cell.seed), clip_skip=(cfg.model.clip_skip - 1) or None,
                ).images[0]
            made = replace(cell, path=str(out_dir / cell.path), time=time.time())  # the event's time is when it was made
            atomic_write(Path(made.path), lambda tmp: image.save(tmp, format="PNG"))
            grid["cells"].append(made.grid_entry(out_dir))
            atomic_write_text(grid_file(out_dir), json.dumps(grid, indent=1))
            sink.emit(made)
        else:
            status = "completed"
    finally:
        grid["status"] = status
        atomic_write_text(grid_file(out_dir), json.dumps(grid, indent=1))
        del pipe, unet, tes, modules, models
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return status


def compare_command(run_dir: Path, *, steps=None, strengths=None, prompts=None, trigger_variants=True, seed=None, sampling_steps=None) -> int:
    def body(sink: StreamSink) -> int:
        status = _render(Path(run_dir), sink, StdinCommands(), steps=steps, strengths=strengths, prompts=prompts,
                         trigger_variants=trigger_variants, seed=seed, sampling_steps=sampling_steps)
        sink.emit(ev.Finished(status, 0))
        return 0

    def oom(on_gpu: bool) -> ev.Error:
        where = "The GPU" if on_gpu else "The computer"
        return ev.Error("out_of_memory", f"{where} ran out of memory while rendering the grid.",
                        "Close other programs using the GPU, or lower sample.width / sample.height in the run's settings.")

    return event_process(body, what="The comparison", oom=oom)
