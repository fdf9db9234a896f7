"""`lora-studio train`: the engine as a process, talking JSON lines on stdout.

The real stdout is kept privately for the event stream and `sys.stdout` is routed to stderr, so a
stray print from any library can never corrupt the stream; stderr is the human log. Commands arrive as
lines on stdin (`stop`, `sample`, `save`); SIGINT / SIGTERM mean `stop`.
"""

from __future__ import annotations

import errno
import io
import json
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.errors import ConfigError, UserError
from lora_studio.core.runs import CONFIG_FILE, RunDir, events_file


class StreamSink:
    """Events to the private stdout handle and appended to the run folder's event log."""

    def __init__(self, stream: io.TextIOBase):
        self.stream = stream
        self.log_file = None
        self.pending: list[ev.Event] = []

    def attach_run_dir(self, run_dir: Path) -> None:
        self.log_file = open(events_file(run_dir), "a", encoding="utf-8")
        for e in self.pending:
            self._log(e)
        self.pending.clear()

    def _log(self, event: ev.Event) -> None:
        try:
            self.log_file.write(event.to_json() + "\n")
            self.log_file.flush()
        except OSError as e:
            # A full disk must not turn into a crash while reporting the full disk: the app still gets
            # every event on stdout; the log on disk stops here, and stderr says so once.
            print(f"{self.log_file.name} can no longer be written ({e.strerror}); events continue on stdout only.", file=sys.stderr)
            self.log_file = None
            self.pending = []

    def emit(self, event: ev.Event) -> None:
        line = event.to_json()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the app went away; keep training and logging to the file
        if isinstance(event, ev.Started) and self.log_file is None:
            self.attach_run_dir(Path(event.run_dir))
        if self.log_file is not None:
            self._log(event)
        elif self.pending is not None:
            self.pending.append(event)
        if isinstance(event, (ev.Warning, ev.Error)):
            print(f"{event.type}: {event.message}", file=sys.stderr)
            if isinstance(event, ev.Error) and event.hint:
                print(f"  {event.hint}", file=sys.stderr)  # a headless user reads stderr, not the JSON


class StdinCommands:
    """Lines from stdin, read on a daemon thread; signals become `stop`."""

    def __init__(self, read_stdin: bool = True):
        self.queue: queue.Queue[str] = queue.Queue()
        if read_stdin and sys.stdin is not None and not sys.stdin.closed:
            threading.Thread(target=self._read, daemon=True).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, lambda *_: self.queue.put("stop"))
            except ValueError:  # not the main thread (in-process tests)
                pass

    def _read(self) -> None:
        try:
            for line in sys.stdin:
                self.queue.put(line.strip().lower())
        except (OSError, ValueError):
            return

    def poll(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out


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


def event_process(body: Callable[[StreamSink], int], *, what: str, oom: Callable[[bool], ev.Error],
                  on_failure: Callable[[StreamSink], None] = lambda sink: None) -> int:
    """Run `body` as an engine process: events on the private stdout, stray prints to stderr, and every
    failure turned into one `error` event (then `finished` failed, exit 1) — never a bare traceback."""
    events_out = sys.stdout
    if os.environ.get("RANK", "0") != "0":
        # Under `accelerate launch` only rank 0 speaks: one event stream, whatever the process count.
        events_out = open(os.devnull, "w")
    sys.stdout = sys.stderr  # stray prints go to the human log, never into the event stream
    sink = StreamSink(events_out)
    try:
        return body(sink)
    except UserError as e:
        on_failure(sink)
        sink.emit(ev.Error(e.code, e.message, e.hint))
    except OSError as e:  # a full disk, a folder that cannot be written: the computer's state, not a bug
        on_failure(sink)
        sink.emit(_file_error(e))
    except Exception as e:  # noqa: BLE001 - the last line of defence
        from lora_studio.engine.out_of_memory import out_of_memory_where

        on_failure(sink)
        where = out_of_memory_where(e)
        if where is not None:
            sink.emit(oom(where == "gpu"))
        else:
            traceback.print_exc(file=sys.stderr)
            sink.emit(ev.Error("internal_error", f"{what} failed unexpectedly: {type(e).__name__}: {e}.",
                               "This is a bug in LoRA Studio; the log above has the details (please report it)."))
    finally:
        sys.stdout = events_out
    sink.emit(ev.Finished("failed", 0))
    return 1


NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _file_error(e: OSError) -> ev.Error:
    """An OSError as the artist needs it: which file, what went wrong, what to do. Checkpoints and exports
    are written to a temp file or folder and renamed into place, so what was saved before is intact."""
    name = f" {e.filename}" if e.filename else ""
    if e.errno in NO_ROOM:
        return ev.Error("disk_full", f"There was no room to write{name} ({e.strerror}).",
                        "Free some space on that disk (or set output.dir to a folder on another one), then resume; "
                        "what was saved before, the last checkpoint included, is intact.")
    if e.errno in NOT_ALLOWED:
        return ev.Error("cannot_write", f"LoRA Studio may not write{name} ({e.strerror}).",
                        "Choose a folder you can write to (output.dir, or the project's folder), or change its permissions.")
    return ev.Error("file_error", f"A file operation failed{' on' + name if name else ''}: {e.strerror or e}.",
                    "Check that the disk is connected and the path exists, then resume; what was saved before is intact.")


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
