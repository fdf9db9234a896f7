"""`lora-studio`: no arguments (or a project folder) opens the app; subcommands run the engine headless.

This module only parses the command line and hands it to the command that does the work (the engine's
commands in lora_studio.engine, the app in lora_studio.gui). Imports are lazy so that opening the window
never imports torch, and `--help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lora_studio.core.errors import UserError
from lora_studio.core.runs import RANKING_FILE

SUBCOMMANDS = ("train", "export", "compare", "inspect", "bench", "device", "demo", "gui")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-studio", description="Train image-style LoRAs for Stable Diffusion, offline.")
    sub = p.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train a LoRA from a config file (headless; what the app runs)")
    t.add_argument("config", type=Path, help="the run's settings (TOML), e.g. MyStyle/lora_studio.toml")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run dir")
    t.add_argument("--dry-run", action="store_true", help="check the settings and estimate memory, then exit")

    e = sub.add_parser("export", help="export a checkpoint of a run as a LoRA file every UI loads")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--step", type=int, default=None, help="the checkpoint step (default: the newest)")
    e.add_argument("--out", type=Path, default=None, help="the .safetensors file to write")
    e.add_argument("--events", action="store_true", help="report as JSON-lines events on stdout (what the app reads)")

    c = sub.add_parser("compare", help="a grid to choose the result: checkpoints x LoRA strengths x trigger on/off")
    c.add_argument("run_dir", type=Path)
    c.add_argument("--steps", default=None, help="checkpoint steps, comma-separated (default: every checkpoint kept)")
    c.add_argument("--strengths", default="0.5,1.0", help="LoRA strengths, comma-separated (default: 0.5,1.0)")
    c.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable; default: the run's sample prompts)")
    c.add_argument("--no-trigger-variants", action="store_true", help="only the prompts as written, not also without the trigger")
    c.add_argument("--seed", type=int, default=None, help="the base seed: prompt i uses seed + i in every cell, as the run's samples do (default: the run's sample seed)")
    c.add_argument("--sampling-steps", type=int, default=None, help="denoising steps per image (default: the run's)")
    ranking = c.add_mutually_exclusive_group()
    ranking.add_argument("--rank", action="store_true", help="then rank the grid's checkpoints (strength 1.0, with the "
                         f"trigger) and write the recommendation to {RANKING_FILE}, in the grid's folder and the run's")
    ranking.add_argument("--rank-samples", action="store_true", help="render no grid: rank the checkpoints by the run's "
                         f"own samples and write the run's {RANKING_FILE}")

    i = sub.add_parser("inspect", help="show what a LoRA file holds (and verify it against a base model)")
    i.add_argument("file", type=Path)
    i.add_argument("--base", type=Path, default=None, help="a base model to verify the LoRA against")
    i.add_argument("--json", action="store_true", help="print the findings as JSON")

    b = sub.add_parser("bench", help="time our training step against the diffusers reference recipe")
    b.add_argument("--preset", default="tiny", choices=("tiny", "sd15-512", "sdxl-1024", "sdxl-1024-fp8", "world"))
    b.add_argument("--steps", type=int, default=None, help="timed steps per side (default: per preset)")
    b.add_argument("--batch-size", type=int, default=None)
    b.add_argument("--json", type=Path, default=None, help="write the results to this file")
    b.add_argument("--base-weights", default=None, choices=("auto", "fp32", "fp16", "bf16", "fp8"),
                   help="storage of our side's frozen weights (default: per preset); the reference keeps the recipe's")

    v = sub.add_parser("device", help="the GPU training would use, and its memory")
    v.add_argument("--json", action="store_true", help="print it as JSON (what the app reads)")

    d = sub.add_parser("demo", help="create a demo project (geopop-style pictures and the built-in world model) and open it")
    d.add_argument("dir", type=Path, nargs="?", default=None, help="where to create it (default: in your documents)")
    d.add_argument("--no-gui", action="store_true", help="only create the project")

    g = sub.add_parser("gui", help="open the app (the default)")
    g.add_argument("project", type=Path, nargs="?", default=None)
    return p


def _open_app(project: Path | None) -> int:
    from lora_studio.gui.app import run_app

    return run_app(project)


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from lora_studio.engine.train_command import train_command

        return train_command(args.config, resume=args.resume, dry_run=args.dry_run)
    if args.command == "export":
        from lora_studio.engine.export.export import export_command, export_events_command

        command = export_events_command if args.events else export_command
        return command(args.run_dir, step=args.step, out=args.out)
    if args.command == "compare":
        from lora_studio.engine.compare import compare_command

        return compare_command(
            args.run_dir, steps=_numbers(args.steps, int), strengths=_numbers(args.strengths, float), prompts=args.prompt,
            trigger_variants=not args.no_trigger_variants, seed=args.seed, sampling_steps=args.sampling_steps,
            rank=args.rank, rank_samples=args.rank_samples,
        )
    if args.command == "inspect":
        from lora_studio.engine.export.inspect_lora import inspect_command

        return inspect_command(args.file, base=args.base, as_json=args.json)
    if args.command == "bench":
        from lora_studio.engine.bench.bench import bench_command

        return bench_command(args.preset, steps=args.steps, batch_size=args.batch_size, json_path=args.json,
                             base_weights=args.base_weights)
    if args.command == "device":
        from lora_studio.engine.device_info import device_command

        return device_command(as_json=args.json)
    if args.command == "demo":
        from lora_studio.core import demo
        from lora_studio.core.project import default_demo_dir

        # Pillow pictures and a copy of the shipped world model: about half a second, in this process (no
        # torch), so the window opens as fast as plain `lora-studio` does.
        target = Path(args.dir or default_demo_dir())
        try:
            target = demo.create(target).parent
        except OSError as e:
            raise UserError(f"Could not create the demo project in {target}: {e.strerror or e}.",
                            hint="Give it another folder: lora-studio demo PATH") from None
        if args.no_gui:
            print(target)
            return 0
        return _open_app(target)
    return _open_app(getattr(args, "project", None))


def _numbers(text: str | None, kind):
    if text is None:
        return None
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{text!r} is not a comma-separated list of numbers.", hint="Write it like 200,400,600 or 0.5,1.0.") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `lora-studio MyStyle/` opens a project: a bare path is not a subcommand.
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv = ["gui", *argv]
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except UserError as e:
        print(e.for_terminal(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
