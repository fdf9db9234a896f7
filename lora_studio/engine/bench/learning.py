"""`lora-studio bench --preset world`: does our recipe learn as well as diffusers' on the demo world?

The speed presets (`engine.bench.bench`) time a step on random weights; this one trains. On the demo
project (`core.demo`: 48 geopop pictures, 4 held out for validation, the shipped world model, the demo's
settings), both recipes (`engine.bench.learners`) train the same LoRA — rank, alpha, targets, learning rate
and schedule, batch, steps, seed — on the same batches. At steps 0, ¼, ½, ¾ and all of the run each side
draws the demo's held-out prompts (combinations no training picture shows) with fixed seeds, and for each
side and step the benchmark reports:

- style: the style score (`engine.evaluate.style`; 0 = the step-0 pictures' look, 1 = the training set's);
- prompts: the prompt score (`engine.evaluate.prompts`; the share the base model reads as their own prompt);
- dark: the world's ground truth for the style, the mean `world.read_picture(...).dark_share` (the share
  of black pixels: ~0 for the base world, the geopop outlines are black);
- follows: the world's ground truth for the prompts, the share of pictures whose background and shape
  colours are the ones the prompt names (`Reading.follows`);
- background: the share of pictures whose background is the named colour (`follows` asks that and the
  shape colours too);
- train_s: the seconds spent in training steps so far (sampling and scoring not counted).

The two scores come from `engine.evaluate.rank.score_steps`, as a run's ranking does; the ground truth
reads the pictures directly and is what the scores are checked against. docs/performance.md has the
measured figures and the limits.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from lora_studio.core import config as config_mod
from lora_studio.core import world
from lora_studio.core.config import Config
from lora_studio.core.dataset import scan
from lora_studio.core.errors import UserError
from lora_studio.core.images import load_rgb
from lora_studio.core.resources import resource
from lora_studio.core import demo
from lora_studio.engine.bench.environment import device_description, quiet_diffusers, versions
from lora_studio.engine.bench.learners import Learner, OursLearner, ReferenceLearner

Log = Callable[[str], None]


@dataclass(frozen=True)
class LearningPreset:
    name: str
    steps: int  # optimizer steps per side
    pictures_per_prompt: int  # samples of each held-out prompt at each sampled step (seeds sample.seed + k)
    sample_points: int = 4  # sampled at 0 and at every steps / sample_points


PRESETS = {"world": LearningPreset("world", steps=200, pictures_per_prompt=4)}
SETTING_KEYS_THAT_MUST_MATCH = ("lora_modules", "rank", "lora_scaling", "lora_dtype", "trainable_params", "base_dtype",
                                "optimizer", "learning_rate", "weight_decay", "betas", "eps", "mixed_precision")


def sample_steps(steps: int, points: int) -> list[int]:
    """0, then `points` evenly spaced steps ending at `steps` (fewer when the run is shorter than that)."""
    return sorted({round(steps * k / points) for k in range(points + 1)})


def held_out_scenes() -> list[world.Scene]:
    """The answer key of each of demo.PROMPTS: demo.HELD_OUT's background and colours, with the shapes the
    prompt names, placed apart (seeded). `Reading.follows` reads the background and the set of shape colours
    only; the kinds and places make the key a scene that can be drawn (the tests draw it)."""
    if len(demo.HELD_OUT) != len(demo.PROMPTS):
        raise ValueError("demo.HELD_OUT must name the colours of each of demo.PROMPTS, in order")
    shape = re.compile(rf"\b({'|'.join(world.PALETTE)}) ({'|'.join(world.SHAPES)})\b")
    scenes = []
    for k, (prompt, (background, colours)) in enumerate(zip(demo.PROMPTS, demo.HELD_OUT)):
        things = shape.findall(prompt)
        if {c for c, _ in things} != set(colours):
            raise ValueError(f"demo.HELD_OUT[{k}] does not name the colours of {prompt!r}")
        scenes.append(world.scene_from_prompt(background, things, random.Random(k)))
    return scenes


def _world_model() -> dict:
    """Which world model was measured: its training record's figures, if it has one."""
    info: dict = {"path": str(resource("models", "world"))}
    record = resource("models", "world", "training.json")
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        info["training"] = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool))}
    except (OSError, ValueError):
        info["training"] = None
    return info


# -- drawing the samples ----------------------------------------------------------------------------


@torch.no_grad()
def draw(learner: Learner, cfg: Config, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
    """The pictures `learner`'s model draws now for `prompts`, one seed each, with the run's sample settings."""
    from lora_studio.engine.training import sampling

    s, m = cfg.sample, learner.models
    unet, tes = learner.unet, learner.text_encoders
    modules = [unet, *tes, m.vae]
    with sampling.preserved_state(modules):  # the reference's noise comes from torch's global RNG
        for module in modules:
            module.eval()
        pipe = sampling.build_pipeline(m, unet, tes)
        pipe.set_progress_bar_config(disable=True)
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        with learner.accelerator.autocast():
            # One batch: each picture's starting noise comes from its own generator, as if drawn alone.
            images = pipe(prompts, negative_prompt=[s.negative_prompt] * len(prompts) if s.negative_prompt else None,
                          num_inference_steps=s.steps, guidance_scale=s.guidance_scale, width=cfg.train.resolution,
                          height=cfg.train.resolution, generator=generators, clip_skip=(cfg.model.clip_skip - 1) or None).images
        del pipe
    return images


# -- training both sides ----------------------------------------------------------------------------


@dataclass
class SideRun:
    learner: Learner
    setup_s: float
    train_s: float = 0.0
    sample_s: float = 0.0
    done: int = 0  # steps trained
    rows: dict = field(default_factory=dict)  # {step: {"train_s", "loss", "lr"}}
    pictures: dict = field(default_factory=dict)  # {step: [(picture, prompt index)]}


def _train_to(run: SideRun, target: int) -> None:
    learner, losses = run.learner, []
    t0 = time.perf_counter()
    for i in range(run.done, target):
        losses.append(learner.step(i))
    # The read-back closes the stretch (our loop reads the loss every log_every steps): timed with it.
    values = [float(x) for x in losses]
    if values:
        run.train_s += time.perf_counter() - t0
    run.done = target
    run.rows[target] = {"train_s": run.train_s, "loss": sum(values) / len(values) if values else None, "lr": learner.lr}


def _sample(run: SideRun, step: int, cfg: Config, prompts: list[str], seeds: list[int], indices: list[int]) -> None:
    t0 = time.perf_counter()
    run.pictures[step] = list(zip(draw(run.learner, cfg, prompts, seeds), indices))
    run.sample_s += time.perf_counter() - t0


def train_both(cfg: Config, items, device: torch.device, points: list[int], per_prompt: int, log: Log) -> list[SideRun]:
    """Both recipes trained to each of `points` in turn, alternating ABBA (ours, ref, ref, ours, ...) between
    stretches so a busy machine slows both alike, with samples drawn at every point."""
    prompts = list(demo.PROMPTS) * per_prompt
    indices = [k % len(demo.PROMPTS) for k in range(len(prompts))]
    seeds = [cfg.sample.seed + k for k in range(len(prompts))]  # prompt j's first picture: the run's own sample seed
    runs = []
    for cls in (OursLearner, ReferenceLearner):
        log(f"  building {cls.name}")
        t0 = time.perf_counter()
        learner = cls(cfg, items, device)
        runs.append(SideRun(learner, time.perf_counter() - t0))
    for r, target in enumerate(points):
        for run in runs if r % 2 == 0 else reversed(runs):
            _train_to(run, target)
            _sample(run, target, cfg, prompts, seeds, indices)
        log(f"  step {target}: " + ", ".join(f"{run.learner.name} {run.train_s:.1f} s" for run in runs))
    return runs


# -- scoring ----------------------------------------------------------------------------------------


def score(run: SideRun, judge, cfg: Config, data: list[Image.Image]) -> dict:
    """The side's rows: the two scores (judged by the untouched base model) and the world's ground truth."""
    from lora_studio.engine.evaluate.rank import score_steps

    # Never None here: the pictures always hold step 0 and a later step.
    rec = score_steps(judge, cfg, run.pictures, list(demo.PROMPTS), data)
    by_step = {s.step: s for s in rec.scores}
    scenes = held_out_scenes()
    rows = []
    for step in sorted(run.pictures):
        readings = [(world.read_picture(img), j) for img, j in run.pictures[step]]
        s = by_step.get(step)
        rows.append({
            "step": step,
            # Step 0 defines the style line's 0 (its pictures are the base of `style_scale`).
            "style": s.style if s else 0.0,
            "prompts": s.prompts if s else rec.base_prompts,
            "dark_share": sum(rd.dark_share for rd, _ in readings) / len(readings),
            "follows": sum(rd.follows(scenes[j]) for rd, j in readings) / len(readings),
            # Half of `follows`, and the half a weak base model gets right first: the named background.
            "background": sum(rd.background == scenes[j].background for rd, j in readings) / len(readings),
            **run.rows[step],
        })
    return {"steps": rows, "recommended": {"step": rec.step, "sentence": rec.sentence}}


# -- the command ------------------------------------------------------------------------------------


def _demo_config(root: Path, steps: int, batch_size: int | None, sampling_steps: int | None) -> Config:
    cfg = config_mod.load(demo.create(root / "demo"), check=False)
    train = {"max_steps": steps, **({"batch_size": batch_size} if batch_size else {})}  # the schedule ends at the run's end
    return cfg.replace(train=train, sample={"steps": sampling_steps} if sampling_steps else {})


def _settings(cfg: Config, preset: LearningPreset, items, points, per_prompt: int, sides: dict) -> dict:
    t, n, s = cfg.train, cfg.network, cfg.sample
    ours, ref = sides["lora_studio"], sides["reference"]
    mismatched = {k: (ours.get(k), ref.get(k)) for k in SETTING_KEYS_THAT_MUST_MATCH if ours.get(k) != ref.get(k)}
    return {
        "preset": preset.name, "dataset": f"the demo project ({len(items)} geopop pictures trained on)",
        "resolution": t.resolution, "batch_size": t.batch_size, "steps": t.max_steps, "rank": n.rank, "alpha": n.alpha,
        "targets": n.targets, "learning_rate": t.learning_rate, "lr_scheduler": t.lr_scheduler, "warmup_steps": t.warmup_steps,
        "optimizer": t.optimizer, "weight_decay": t.weight_decay, "max_grad_norm": t.max_grad_norm, "seed": t.seed,
        "sampled_at": points, "prompts": list(demo.PROMPTS), "pictures_per_prompt": per_prompt,
        "sampler": {"name": "DPM++ 2M", "steps": s.steps, "guidance_scale": s.guidance_scale, "seeds": f"{s.seed} + picture index"},
        "settings_match": not mismatched, "mismatched_settings": mismatched,
    }


def run_learning_bench(preset_name: str = "world", *, steps: int | None = None, batch_size: int | None = None,
                       pictures_per_prompt: int | None = None, sampling_steps: int | None = None,
                       device: str | None = None, log: Log = lambda s: print(s, file=sys.stderr)) -> dict:
    """Train both recipes on the demo world and return the results (the JSON document)."""
    from lora_studio.engine.models.load import load_models
    from lora_studio.engine.training import validation

    preset = PRESETS[preset_name]
    steps = steps or preset.steps
    per_prompt = pictures_per_prompt or preset.pictures_per_prompt
    if steps < 1 or (batch_size is not None and batch_size < 1):
        raise UserError("--steps and --batch-size must be at least 1.", code="bad_argument")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    began, date = time.perf_counter(), _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    points = sample_steps(steps, preset.sample_points)
    with tempfile.TemporaryDirectory(prefix="lora-studio-bench-world-") as tmp, quiet_diffusers():
        cfg = _demo_config(Path(tmp), steps, batch_size, sampling_steps)
        items, _held = validation.held_out(cfg, scan(cfg.dataset, verify=True).items)
        log(f"bench {preset.name}: the demo world, {len(items)} pictures at {cfg.train.resolution} px, {steps} steps per side, "
            f"samples at {points}, on {device_description(dev)}")
        runs = train_both(cfg, items, dev, points, per_prompt, log)
        log("  scoring")
        judge = load_models(cfg.model, torch.float32)  # the base model, untouched by either side's LoRA
        for m in (judge.unet, judge.vae, *judge.text_encoders):
            m.to(dev)
        data = [load_rgb(item.path) for item in items]
        sides = {run.learner.name: {"setup_s": run.setup_s, "train_s": run.train_s, "sample_s": run.sample_s,
                                    "settings": run.learner.settings(), **score(run, judge, cfg, data)} for run in runs}
        settings = _settings(cfg, preset, items, points, per_prompt, {k: v["settings"] for k, v in sides.items()})
    return {
        "preset": preset.name, **sides, "settings": settings, "world_model": _world_model(),
        "device": device_description(dev), "cpu_threads": torch.get_num_threads(), "versions": versions(),
        "date": date, "wall_s": time.perf_counter() - began,
    }


COLUMNS = (("style", "{:.2f}"), ("prompts", "{:.2f}"), ("dark_share", "{:.3f}"), ("follows", "{:.2f}"), ("background", "{:.2f}"), ("train_s", "{:.1f}"), ("loss", "{:.4f}"))


def format_table(doc: dict) -> str:
    s = doc["settings"]
    model = doc["world_model"].get("training") or {}
    lines = [
        f"LoRA Studio bench — {s['preset']}: {s['dataset']}, {s['resolution']} px, rank {s['rank']}, alpha {s['alpha']:g}, "
        f"{s['targets']}, lr {s['learning_rate']:g} {s['lr_scheduler']}, batch {s['batch_size']}, {s['steps']} steps, seed {s['seed']}",
        f"on {doc['device']}; world model: {model.get('unet_steps', '?')} UNet steps; settings match: {s['settings_match']}",
        f"{'side':<13}{'step':>5}" + "".join(f"{name:>11}" for name, _ in COLUMNS),
    ]
    for side in ("lora_studio", "reference"):
        for row in doc[side]["steps"]:
            cells = "".join(f"{('—' if row[name] is None else fmt.format(row[name])):>11}" for name, fmt in COLUMNS)
            lines.append(f"{side:<13}{row['step']:>5}{cells}")
        rec = doc[side]["recommended"]
        if rec:
            lines.append(f"{'':<13}recommended: {rec['sentence']}")
    return "\n".join(lines)


def finite_numbers(doc) -> list[str]:
    """The paths of the document's numbers that are not finite (NaN, ±inf): [] when every one is."""
    bad = []

    def walk(x, path):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")
        elif isinstance(x, float) and not math.isfinite(x):
            bad.append(path)

    walk(doc, "")
    return bad


def learning_bench_command(preset: str, *, steps: int | None = None, batch_size: int | None = None,
                           json_path: Path | None = None, **overrides) -> int:
    """Run, print the table, write the JSON. `overrides`: run_learning_bench's pictures_per_prompt and
    sampling_steps (the tests' quick run)."""
    doc = run_learning_bench(preset, steps=steps, batch_size=batch_size, **overrides)
    print(format_table(doc))
    if json_path is not None:
        from lora_studio.core.atomic import atomic_write_text

        atomic_write_text(Path(json_path), json.dumps(doc, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0
