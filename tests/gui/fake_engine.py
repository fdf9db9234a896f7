"""A stand-in for `python -m lora_studio` that replays a canned event file like the real engine would.

    fake_engine.py [--replay FILE] [--delay S] [--crash-after N] [--ignore-stop] [--spawn-child]
                   [--problems] [--old-cli]  train CONFIG [--resume] | export RUN_DIR [--step N] [--out F] [--events]
                   | compare RUN_DIR [--steps 20,40] [--strengths 0.5,1.0] [--prompt P]... [--no-trigger-variants]
                                     [--seed S] [--sampling-steps K]

It keeps the engine's promises that the GUI relies on: events on stdout (one JSON object a line, plus
one stray non-JSON line and one line written in two halves), a human log on stderr, every event also
appended to RUN_DIR/events.jsonl, real PNG files at the sample paths it announces, checkpoint folders
with state.json and lora.safetensors, and stdin commands (stop / sample / save) read between events.

`compare` replays compare_short.jsonl (a grid of 2 prompts: the base model, then steps 20 and 40 at strengths
0.5 and 1.0, each with and without the trigger), keeping only the cells the arguments ask for, writing each
cell's PNG and the folder's grid.json (the engine's shape: {"status", "cells": [{..., "file"}]}, each cell
written by CompareCell.grid_entry as the engine writes it) as it goes;
it refuses a step without a checkpoint, as the engine does.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

from lora_studio.core import events as ev

DATA = Path(__file__).with_name("data")
RUN_SHORT = DATA / "run_short.jsonl"  # 46 events, 40 steps, 8 samples, 2 checkpoints, exported, completed
RUN_OOM = DATA / "run_oom.jsonl"  # 4 progress steps, a checkpoint at 4, an out_of_memory error with a fix, finished(failed)
DEFAULT_REPLAY = RUN_SHORT
COMPARE_SHORT = DATA / "compare_short.jsonl"  # 20 cells: (base + steps 20, 40 x 0.5, 1.0) x trigger on/off x 2 prompts


# --- helpers for the tests (tests/gui is on sys.path, so they `from fake_engine import ...`) -------------

def fake_engine_command(*options: str) -> tuple[str, list[str]]:
    """(program, prefix_args) that run this fake engine with options placed before the subcommand."""
    return sys.executable, [str(Path(__file__).resolve()), *options]


def make_run_dir(runs_dir: Path, run_id: str, name: str = "my_style") -> Path:
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(f'schema_version = 1\n\n[output]\nname = "{name}"\n', encoding="utf-8")
    return run_dir


def replay_run(run_dir: Path, *options: str) -> Path:
    """Fill run_dir the way a finished run leaves it, by running the fake engine to the end."""
    program, prefix = fake_engine_command("--delay", "0", *options)
    subprocess.run([program, *prefix, "train", str(run_dir / "config.toml")], check=False, timeout=60,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run_dir


# --- the engine ------------------------------------------------------------------------------------------


class Engine:
    def __init__(self, run_dir: Path, delay: float, log_events: bool = True):
        self.run_dir = run_dir
        self.log_events = log_events  # a comparison's events do not belong to the training run's log
        self.delay = delay
        self.step = 0
        self.commands: queue.Queue[str] = queue.Queue()
        self.emitted = 0

    def emit(self, data: dict, split: bool = False) -> None:
        data = {**data, "time": time.time()}
        line = json.dumps(data)
        if split:  # the GUI must put a line read in two pieces back together
            sys.stdout.write(line[:15])
            sys.stdout.flush()
            time.sleep(max(self.delay, 0.01))
            line = line[15:]
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if not self.log_events:
            self.emitted += 1
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(data) + "\n")
        self.emitted += 1

    def resolve(self, path: str) -> Path:
        return Path(path) if Path(path).is_absolute() else self.run_dir / path

    def realize(self, data: dict) -> dict:
        """Make the files an event announces exist, and make its paths absolute like the engine's."""
        kind = data["type"]
        if kind == "started":
            return {**data, "run_dir": str(self.run_dir)}
        if kind == "sample":
            path = self.resolve(data["path"])
            write_png(path, data["step"] + 37 * data.get("index", 0), size=(256, 256))
            return {**data, "path": str(path)}
        if kind == "checkpoint":
            path = self.resolve(data["path"])
            path.mkdir(parents=True, exist_ok=True)
            (path / "state.json").write_text(json.dumps({"step": data["step"]}))
            (path / "lora.safetensors").write_bytes(b"fake safetensors")
            return {**data, "path": str(path)}
        if kind == "exported":
            path = self.resolve(data["path"])
            path.write_bytes(b"fake safetensors")
            preview = self.resolve(data["preview"]) if data.get("preview") else None
            if preview:
                write_png(preview, 7, size=(128, 128))
            return {**data, "path": str(path), "preview": str(preview or "")}
        if kind == "finished" and data.get("export_path"):
            return {**data, "export_path": str(self.resolve(data["export_path"]))}
        return data

    def sample_now(self) -> None:
        path = self.run_dir / "samples" / f"step_{self.step:06d}_p0_s7.png"
        self.emit(self.realize({"type": "sample", "step": self.step, "path": str(path), "prompt": "now", "seed": 7}))

    def save_now(self) -> None:
        path = self.run_dir / "checkpoints" / f"step_{self.step:06d}"
        self.emit(self.realize({"type": "checkpoint", "step": self.step, "path": str(path)}))


def write_png(path: Path, hue: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, ((hue * 53) % 256, (hue * 97) % 256, (hue * 29) % 256))
    img.paste((255, 255, 255), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    img.save(path)


def write_compare_png(path: Path, cell: dict) -> None:
    """A picture that changes the way a LoRA's does: the style (warm stripes) grows with step and strength,
    and bleeds in faintly without the trigger word."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    size = 256
    y, x = np.mgrid[0:size, 0:size]
    base = np.array([(70, 110, 160), (90, 140, 90)][cell["prompt_index"] % 2], dtype=np.float32)
    sky = (1.0 - y / size * 0.5)[..., None]
    stripe = ((x + y) // 24 % 2)[..., None]
    warm = np.where(stripe, np.array([230, 150, 60]), np.array([180, 60, 90])).astype(np.float32)
    amount = min(1.0, cell["strength"] * cell["step"] / 40) * (1.0 if cell["trigger"] else 0.25)
    pixels = base * sky * (1 - amount) + warm * amount
    img = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    box = (64, 85, 192, 213) if cell["prompt_index"] % 2 == 0 else (85, 64, 171, 256)
    img.paste((240, 240, 235), box)
    img.save(path)


def read_stdin(commands: queue.Queue[str]) -> None:
    for line in sys.stdin:
        commands.put(line.strip())


def newest_checkpoint_step(run_dir: Path) -> int:
    steps = [int(m.group(1)) for p in run_dir.glob("checkpoints/step_*") if (m := re.fullmatch(r"step_(\d+)", p.name))]
    return max(steps, default=0)


def train(opts: argparse.Namespace) -> int:
    run_dir = Path(opts.config).resolve().parent
    engine = Engine(run_dir, opts.delay)
    threading.Thread(target=read_stdin, args=(engine.commands,), daemon=True).start()
    if opts.ignore_stop and hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a hung engine: only a kill ends it
    if opts.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(f"child pid {child.pid}", file=sys.stderr, flush=True)
    resume_from = newest_checkpoint_step(run_dir) if opts.resume else 0
    events = [json.loads(line) for line in open(opts.replay, encoding="utf-8") if line.strip()]
    print(f"fake engine: replaying {len(events)} events into {run_dir}", file=sys.stderr, flush=True)
    failed = False
    if opts.resume and not resume_from:  # as the engine says it, before it starts again from step 0
        engine.emit({"type": "warning", "message": "There is no checkpoint to resume from; starting from step 0.",
                     "code": "nothing_to_resume"})
    for i, data in enumerate(events):
        if opts.crash_after is not None and i >= opts.crash_after:
            print("Traceback (most recent call last):\n  File \"engine/training/loop.py\", line 321, in step\n"
                  "RuntimeError: CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
            return 3
        while not engine.commands.empty():
            command = engine.commands.get()
            if command == "stop" and not opts.ignore_stop:
                print("stop requested: saving a checkpoint", file=sys.stderr, flush=True)
                engine.save_now()
                engine.emit({"type": "finished", "status": "stopped", "step": engine.step, "export_path": ""})
                return 0
            if command == "sample":
                engine.sample_now()
            elif command == "save":
                engine.save_now()
        step = data.get("step", 0)
        if resume_from and data["type"] in ("progress", "sample", "checkpoint") and step <= resume_from:
            continue
        if data["type"] == "started" and resume_from:
            data = {**data, "start_step": resume_from}
        engine.step = max(engine.step, step) if data["type"] == "progress" else engine.step
        engine.emit(engine.realize(data), split=(i == 2))
        if i == 1:
            print("a library printed this to stdout", flush=True)  # noise the GUI must ignore
        if data["type"] == "progress" and step % 10 == 0:
            print(f"step {step}/{data['total_steps']} loss {data['loss']:.4f}", file=sys.stderr, flush=True)
        failed = failed or (data["type"] == "finished" and data.get("status") == "failed")
        time.sleep(opts.delay)
    if opts.ignore_stop:
        while True:  # hang like a deadlocked engine
            time.sleep(0.05)
    return 1 if failed else 0


def export(opts: argparse.Namespace) -> int:
    run_dir = Path(opts.run_dir).resolve()
    engine = Engine(run_dir, opts.delay)
    step = opts.step or newest_checkpoint_step(run_dir)
    print(f"exporting step {step} of {run_dir}", file=sys.stderr, flush=True)
    if not (run_dir / "checkpoints" / f"step_{step:06d}").is_dir():
        if opts.events:
            engine.emit({"type": "error", "code": "no_checkpoint", "hint": "Pick one of the run's checkpoints.",
                         "message": f"This run has no checkpoint at step {step}."})
        return 2
    out = Path(opts.out) if opts.out else run_dir / f"my_style-step{step:06d}.safetensors"
    time.sleep(opts.delay)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"fake safetensors")
    preview = out.with_suffix(".preview.png")
    write_png(preview, step, size=(128, 128))
    problems = ["3 LoRA keys do not match any layer of the base model"] if opts.problems else []
    if opts.events:
        engine.emit({"type": "exported", "path": str(out), "step": step, "verified": not problems,
                     "problems": problems, "preview": str(preview)})
    else:
        print(f"wrote {out}")
    return 0


def compare(opts: argparse.Namespace) -> int:
    run_dir = Path(opts.run_dir).resolve()
    engine = Engine(run_dir, opts.delay, log_events=False)
    threading.Thread(target=read_stdin, args=(engine.commands,), daemon=True).start()
    steps = [int(x) for x in opts.steps.split(",")] if opts.steps else None
    strengths = [float(x) for x in opts.strengths.split(",")] if opts.strengths else None
    print(f"comparing {run_dir.name}: steps {steps} strengths {strengths} prompts {opts.prompt} "
          f"sampling steps {opts.sampling_steps}", file=sys.stderr, flush=True)
    for step in steps or []:
        if not (run_dir / "checkpoints" / f"step_{step:06d}").is_dir():
            engine.emit({"type": "error", "code": "unknown_step", "hint": "Pick one of the run's checkpoints.",
                         "message": f"The run has no checkpoint at step {step}."})
            engine.emit({"type": "finished", "status": "failed", "step": 0, "export_path": ""})
            return 1
    grids: dict[Path, dict] = {}  # grid.json as the engine writes it, rewritten after every cell

    def save(folder: Path, status: str) -> None:
        grid = grids[folder]
        grid["status"] = status
        (folder / "grid.json").write_text(json.dumps(grid, indent=1), encoding="utf-8")

    made = 0
    for data in (json.loads(line) for line in open(opts.replay or COMPARE_SHORT, encoding="utf-8") if line.strip()):
        if not engine.commands.empty() and engine.commands.get() == "stop":
            print("stop requested: ending the comparison", file=sys.stderr, flush=True)
            for folder in grids:
                save(folder, "stopped")
            engine.emit({"type": "finished", "status": "stopped", "step": 0, "export_path": ""})
            return 0
        if data["type"] == "compare_cell":
            if opts.crash_after is not None and made >= opts.crash_after:
                print("Traceback (most recent call last):\n  File \"engine/compare.py\", line 88, in cell\n"
                      "RuntimeError: CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
                return 3  # grid.json still says "running", as a killed engine leaves it
            lora = data["step"] != 0
            if lora and steps is not None and data["step"] not in steps:
                continue
            if lora and strengths is not None and not any(abs(data["strength"] - s) < 1e-6 for s in strengths):
                continue
            if opts.no_trigger_variants and not data["trigger"]:
                continue
            if opts.prompt is not None:  # the prompts given replace the canned ones, in order
                if data["prompt_index"] >= len(opts.prompt):
                    continue
                if data["trigger"]:
                    data = {**data, "prompt": opts.prompt[data["prompt_index"]]}
            path = engine.resolve(data["path"])
            seed = data["seed"] if opts.seed is None else opts.seed + data["prompt_index"]
            data = {**data, "path": str(path), "seed": seed}
            write_compare_png(path, data)
            grid = grids.setdefault(path.parent, {"version": 1, "run_dir": str(run_dir), "status": "running",
                                                  "settings": {"steps": steps, "strengths": strengths}, "cells": []})
            grid["cells"].append(ev.from_dict(data).grid_entry(path.parent))  # the engine's own record
            save(path.parent, "running")
            made += 1
        if data["type"] == "finished":
            for folder in grids:
                save(folder, data["status"])
        engine.emit(data)
        time.sleep(opts.delay)
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--replay", type=Path, default=None, help="default: run_short.jsonl, compare_short.jsonl")
    p.add_argument("--delay", type=float, default=0.01)
    p.add_argument("--crash-after", type=int, default=None, help="exit 3 after this many events (compare: images), no finished")
    p.add_argument("--ignore-stop", action="store_true", help="ignore stop and SIGTERM, then hang")
    p.add_argument("--spawn-child", action="store_true", help="start a sleeping child process (tree kill test)")
    p.add_argument("--problems", action="store_true", help="export: report verification problems")
    p.add_argument("--old-cli", action="store_true", help="export: reject --events like the CLI before it had it")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("config")
    t.add_argument("--resume", action="store_true")
    e = sub.add_parser("export")
    e.add_argument("run_dir")
    e.add_argument("--step", type=int, default=None)
    e.add_argument("--out", default=None)
    if "--old-cli" not in argv:
        e.add_argument("--events", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("run_dir")
    c.add_argument("--steps", default=None)
    c.add_argument("--strengths", default=None)
    c.add_argument("--prompt", action="append", default=None)
    c.add_argument("--no-trigger-variants", action="store_true")
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--sampling-steps", type=int, default=None)
    opts = p.parse_args(argv)
    opts.events = getattr(opts, "events", False)
    if opts.command == "compare":
        return compare(opts)
    opts.replay = opts.replay or DEFAULT_REPLAY
    return train(opts) if opts.command == "train" else export(opts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
