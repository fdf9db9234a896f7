"""`lora-studio train CONFIG`: the training command — a run folder, the run, its errors as events.

The process plumbing it runs in (the private event stream on stdout, stdin commands, signals, the one
place an exception becomes an `error` event) is `engine/process.py`; this module is what the command does
inside it: pick or make the run folder, `--dry-run`'s report, and the out-of-memory advice.
"""

from __future__ import annotations

import json
from pathlib import Path

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError
from lora_studio.core.runs import CONFIG_FILE, RunDir
from lora_studio.engine.process import StdinCommands, StreamSink, event_process
def _oom_error(cfg, on_gpu: bool = True) -> ev.Error:
    """The out_of_memory error: the estimate for these settings (GPU), the next smaller settings as a
    one-click `fix`, and where the run stands (its last checkpoint is never touched by the failure:
    checkpoints are written to a temp folder and renamed into place)."""
    from lora_studio.core import fit, fit_advice
    from lora_studio.core.model_files import nonstandard_size

    where = "The GPU" if on_gpu else "The computer"
    if cfg is None:
        return ev.Error("out_of_memory", f"{where} ran out of memory while reading the settings.",
                        "Close other programs that use a lot of memory, then try again.")
    total = _gpu_total() if on_gpu else 0
    message = f"{where} ran out of memory during training."
    try:
        if on_gpu and not nonstandard_size(cfg):
            estimate = fit_advice.estimate_for_config(cfg)
            message = f"{where} ran out of memory during training (the estimate for these settings: {fit.fit_report(estimate, total)})."
        step = fit_advice.next_smaller_settings(cfg, total, on_gpu=on_gpu)
    except Exception:  # the estimate is advice; never let it hide the real error
        step = None
    run_dir = Path(cfg.output.dir)
    kept = _kept_checkpoint(run_dir)
    if step is None:
        return ev.Error("out_of_memory", message, f"Close other programs that use {'the GPU' if on_gpu else 'memory'}, "
                        f"or lower train.resolution; {kept}.")
    description, changes = step
    settings = ", ".join(f"{key} = {json.dumps(value)}" for key, value in changes.items())
    hint = (f"Try: {description}: set {settings} in {RunDir(run_dir).config}, then resume with "
            f"`lora-studio train {run_dir} --resume`; {kept}.")
    return ev.Error("out_of_memory", message, hint, fix=changes)


def _kept_checkpoint(run_dir: Path) -> str:
    from lora_studio.engine.training.checkpoint import list_checkpoints

    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        return "no checkpoint had been saved yet, so the run starts again from step 0"
    return f"the last checkpoint (step {ckpts[-1][0]}) is intact and the run continues from it"


def _gpu_total() -> int:
    import torch

    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0


def _dry_run(cfg, out) -> int:
    from lora_studio.core import budget, fit_advice
    from lora_studio.core.dataset import scan

    data = scan(cfg.dataset)
    b = budget.budget_for(cfg, data)
    print(f"Settings are valid. {budget.describe(b)}.", file=out)
    total = _gpu_total()
    print(fit_advice.dry_run_report(cfg, total), file=out)
    return 0


def _run_config(config_path: Path, resume: bool) -> Path:
    """A project's settings file (no output.dir) trains into a fresh `runs/<time>/`, as the app does;
    with --resume, into the project's newest run."""
    from lora_studio.core.project import PROJECT_FILE, Project

    if config_path.name != PROJECT_FILE or not config_path.is_file():
        return config_path
    cfg = config_mod.load(config_path, check=False)
    if cfg.output.dir.strip():
        return config_path
    project = Project(config_path.parent)
    runs = project.list_runs()
    if resume and runs:
        return RunDir(runs[0]).config
    return project.new_run(cfg).config


def _keep_in_run(sink: StreamSink, cfg) -> None:
    """A run that fails before it starts (no images, a missing model) still records why in its own
    event log, so the app's history can say so later. An earlier run's log is never touched."""
    if sink.log_file is not None or cfg is None or not cfg.output.dir:
        return
    run = RunDir(cfg.output.dir)
    if run.path.is_dir() and not run.events.exists():
        sink.attach_run_dir(run.path)


def _dry_run_config(config_path: Path):
    """The settings as a run would use them, without creating a run folder."""
    from lora_studio.core.project import PROJECT_FILE

    cfg = config_mod.load(config_path, check=False)
    if config_path.name == PROJECT_FILE and not cfg.output.dir.strip():
        cfg = cfg.replace(output={"dir": str(config_path.parent.resolve() / "runs" / "<new run>")})
    problems = config_mod.validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _config_file(path: Path) -> Path:
    """A project folder means its lora_studio.toml, a run folder its own settings: what an artist types."""
    from lora_studio.core.project import PROJECT_FILE

    if path.is_dir():
        for name in (PROJECT_FILE, CONFIG_FILE):
            if (path / name).is_file():
                return path / name
    return path


def train_command(config_path: Path, *, resume: bool = False, dry_run: bool = False) -> int:
    cfg = None
    config_path = _config_file(Path(config_path))

    def body(sink: StreamSink) -> int:
        nonlocal cfg
        if dry_run:
            return _dry_run(_dry_run_config(Path(config_path)), sink.stream)
        cfg = config_mod.load(_run_config(Path(config_path), resume))
        from lora_studio.engine.training.loop import train

        finished = train(cfg, sink, StdinCommands(), resume=resume)
        return 0 if finished.status in ("completed", "stopped") else 1

    return event_process(body, what="The engine", oom=lambda on_gpu: _oom_error(cfg, on_gpu=on_gpu),
                         on_failure=lambda sink: _keep_in_run(sink, cfg))
