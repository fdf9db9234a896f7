"""`lora-studio compare RUN_DIR`: the grid to choose the result, on a run that was really trained."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import make_dataset, tiny_config
from PIL import Image

from lora_studio.core import config as config_mod
from lora_studio.core import events as ev
from lora_studio.core.errors import UserError
from lora_studio.core.ranking import Recommendation
from lora_studio.engine.compare import cell_name, plan

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
PROMPTS = ["tstyle, a circle", "a square"]  # the second has no trigger: it gets no variant


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from lora_studio.engine.training.loop import train

    root = tmp_path_factory.mktemp("compare")
    data = make_dataset(root / "data" / "5_tstyle", n=4)
    cfg = tiny_config(
        tiny_model_dir, data, root / "run",
        train={"max_steps": 4, "checkpoint_every": 2, "learning_rate": 5e-3},
        network={"train_text_encoder": True, "text_encoder_lr": 5e-3},  # so the text-encoder adapter is compared too
        sample={"prompts": PROMPTS, "steps": 2, "every": 0},
        output={"trigger": "tstyle"},
    )
    finished = train(cfg, ev.ListSink())
    assert finished.status == "completed"
    return root / "run"


def compare(run_dir: Path, *args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lora_studio", "compare", str(run_dir), *args],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def events_of(stdout: str) -> list[ev.Event]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert all(ev.from_json(line) is not None for line in lines), lines  # nothing but events on stdout
    return [ev.from_json(line) for line in lines]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_the_plan_checks_before_loading_anything(run_dir, tmp_path):
    _, chosen, cells, settings = plan(run_dir, strengths=[0.5, 1.0])
    assert [s for s, _ in chosen] == [2, 4]
    assert settings["sampling_steps"] == 2 and settings["width"] == 64 and settings["seed"] == 1234
    rows = [(c.prompt_index, c.prompt, c.trigger) for c in cells if c.step == 0]
    assert rows == [(0, "tstyle, a circle", True), (0, "a circle", False), (1, "a square", True)]
    assert len(cells) == 3 + 2 * 2 * 3
    assert cells[-1].path == "step_000004_s1.00_t1_p1.png"  # a name in the grid's folder, made when rendering starts
    assert cell_name(200, 1.0, True, 0) == "step_000200_s1.00_t1_p0.png"
    assert cell_name(0, 0.125, False, 3) == "step_000000_s0.125_t0_p3.png"  # no collision with 0.12 / 0.13
    # Strength 0 is the baseline: not rendered again per checkpoint.
    assert {c.strength for c in plan(run_dir, strengths=[0, 1.0])[2]} == {0.0, 1.0}
    assert len(plan(run_dir, strengths=[1.0], steps=[4], trigger_variants=False)[2]) == 2 + 2

    with pytest.raises(UserError) as e:
        plan(run_dir, steps=[3])
    assert e.value.code == "unknown_step" and "2, 4" in e.value.hint
    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "checkpoints", bare / "checkpoints")
    config_mod.save(config_mod.load(run_dir / "config.toml", check=False).replace(sample={"prompts": []}), bare / "config.toml")
    with pytest.raises(UserError) as e:
        plan(bare)
    assert e.value.code == "no_prompts" and "--prompt" in e.value.hint
    assert len(plan(bare, prompts=["tstyle, x"])[2]) > 0


def test_the_grid(run_dir, tiny_model_dir):
    proc = compare(run_dir, "--strengths", "0.5,1.0", "--sampling-steps", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    events = events_of(out)
    assert isinstance(events[-1], ev.Finished) and events[-1].status == "completed"
    cells = [e for e in events if isinstance(e, ev.CompareCell)]
    # The baseline once per prompt/variant, then checkpoints x strengths x (prompt with and without trigger).
    keys = [(c.step, c.strength, c.trigger, c.prompt_index) for c in cells]
    rows = [(True, 0), (False, 0), (True, 1)]
    assert keys == [(0, 0.0, t, p) for t, p in rows] + [(s, k, t, p) for s in (2, 4) for k in (0.5, 1.0) for t, p in rows]
    assert all(c.seed == 1234 + c.prompt_index for c in cells)  # one seed per prompt: only the LoRA differs
    assert {c.prompt for c in cells if not c.trigger} == {"a circle"}
    assert all(Path(c.path).is_file() for c in cells)
    grid_dir = Path(cells[0].path).parent
    assert grid_dir.parent == run_dir / "compare"
    grid = json.loads((grid_dir / "grid.json").read_text())
    assert grid["status"] == "completed" and grid["settings"]["strengths"] == [0.5, 1.0]
    assert [(g["step"], g["strength"], g["trigger"], g["prompt_index"], g["prompt"], g["seed"], g["file"]) for g in grid["cells"]] == [
        (c.step, c.strength, c.trigger, c.prompt_index, c.prompt, c.seed, Path(c.path).name) for c in cells]
    assert Path(cells[0].path).name == "step_000000_s0.00_t1_p0.png"

    def cell(step, strength, trigger=True, p=0):
        return pixels(next(c.path for c in cells if (c.step, c.strength, c.trigger, c.prompt_index) == (step, strength, trigger, p)))

    # The baseline is the base model itself: a plain diffusers render with the same sampler and seed.
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None, local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(PROMPTS[0], num_inference_steps=2, guidance_scale=7.0, width=64, height=64,
                 generator=torch.Generator().manual_seed(1234)).images[0]
    assert np.array_equal(cell(0, 0.0), np.asarray(plain, dtype=np.int16))
    assert np.abs(cell(4, 1.0) - cell(0, 0.0)).max() > 3  # the LoRA changes the image beyond PNG rounding (±1)
    assert np.abs(cell(4, 1.0) - cell(4, 0.5)).max() > 0
    assert np.abs(cell(4, 1.0, trigger=False) - cell(0, 0.0, trigger=False)).max() > 0  # what bleeds without the trigger
    # Strength 1.0 is the trained LoRA: the run's own final sample (same seed, steps and size) exactly,
    # since the CPU path is deterministic and the checkpoint holds the fp32 weights the sample used.
    for p in (0, 1):
        assert np.array_equal(cell(4, 1.0, p=p), pixels(run_dir / "samples" / f"step_000004_p{p}_s{1234 + p}.png"))
        assert np.array_equal(cell(0, 0.0, p=p), pixels(run_dir / "samples" / f"step_000000_p{p}_s{1234 + p}.png"))


def test_an_unknown_step_is_an_error_event(run_dir):
    proc = compare(run_dir, "--steps", "2,3")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    events = events_of(out)
    assert [type(e) for e in events] == [ev.Error, ev.Finished]
    assert events[0].code == "unknown_step" and "2, 4" in events[0].hint
    assert events[1].status == "failed"


def test_a_damaged_checkpoint_is_left_out_of_the_grid_with_a_warning_or_refused_when_asked_for(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("compare"))
    lora_file = copy / "checkpoints" / "step_000004" / "lora.safetensors"
    lora_file.write_bytes(lora_file.read_bytes()[:100])  # truncated, as a full disk leaves it
    proc = compare(copy, "--strengths", "1.0", "--sampling-steps", "2", "--no-trigger-variants")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    events = events_of(out)
    [warning] = [e for e in events if isinstance(e, ev.Warning)]
    assert warning.code == "damaged_checkpoint" and "step 4" in warning.message and "left out of the grid" in warning.message
    assert {e.step for e in events if isinstance(e, ev.CompareCell)} == {0, 2}
    assert events[-1].status == "completed"

    proc = compare(copy, "--steps", "4", "--sampling-steps", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    error = next(e for e in events_of(out) if isinstance(e, ev.Error))
    assert error.code == "damaged_checkpoint" and "step 4" in error.message and "This is a bug" not in error.message


def test_stop_on_stdin_ends_between_cells(run_dir):
    # More denoising steps make each cell slow enough that the stop lands mid-grid.
    proc = compare(run_dir, "--sampling-steps", "12", stdin=subprocess.PIPE)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if '"compare_cell"' in line:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = events_of("".join(lines) + out)
    assert events[-1].type == "finished" and events[-1].status == "stopped"
    cells = [e for e in events if isinstance(e, ev.CompareCell)]
    assert 1 <= len(cells) < 15
    grid = json.loads((Path(cells[0].path).parent / "grid.json").read_text())
    assert grid["status"] == "stopped" and [g["file"] for g in grid["cells"]] == [Path(c.path).name for c in cells]


@pytest.fixture
def unranked_run(run_dir, tmp_path) -> Path:
    """A copy of the trained run without the ranking its training wrote, nor its comparisons."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("compare"))
    (copy / "ranking.json").unlink(missing_ok=True)
    return copy


def saved_ranking(path: Path) -> Recommendation:
    return Recommendation.from_json(json.loads(path.read_text(encoding="utf-8")))


def test_rank_recommends_one_of_the_grids_checkpoints(unranked_run):
    proc = compare(unranked_run, "--strengths", "0.5,1.0", "--sampling-steps", "2", "--no-trigger-variants", "--rank")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    events = events_of(out)
    assert isinstance(events[-1], ev.Finished) and events[-1].status == "completed"
    (ranking,) = [e for e in events if isinstance(e, ev.Ranking)]
    # Scored from the grid's own cells: step 2 has no sample in the run (it sampled at 0 and 4 only).
    assert {s["step"] for s in ranking.scores} == {2, 4}
    assert ranking.step in (2, 4) and ranking.sentence.startswith(f"Step {ranking.step}:")
    grid_dir = Path(next(e.path for e in events if isinstance(e, ev.CompareCell))).parent
    for path in (unranked_run / "ranking.json", grid_dir / "ranking.json"):
        saved = saved_ranking(path)
        assert (saved.step, saved.sentence) == (ranking.step, ranking.sentence)
    assert [e.type for e in ev.read_jsonl(grid_dir / "events.jsonl")][-2:] == ["ranking", "finished"]
    assert ranking.sentence in err  # a headless user reads stderr


def test_rank_samples_ranks_the_runs_own_samples_without_a_grid(unranked_run):
    proc = compare(unranked_run, "--rank-samples")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    events = events_of(out)
    assert not any(isinstance(e, ev.CompareCell) for e in events) and not (unranked_run / "compare").exists()
    (ranking,) = [e for e in events if isinstance(e, ev.Ranking)]
    assert [s["step"] for s in ranking.scores] == [4]  # the only kept checkpoint the run sampled
    assert ranking.step == 4 and ranking.sentence.startswith("Step 4:")
    assert saved_ranking(unranked_run / "ranking.json").sentence == ranking.sentence


def test_rank_needs_strength_one_and_the_training_images(run_dir, tmp_path):
    with pytest.raises(UserError) as e:
        plan(run_dir, strengths=[0.5], rank=True)
    assert e.value.code == "no_rank_strength" and "--strengths" in e.value.hint
    moved = tmp_path / "moved"
    shutil.copytree(run_dir / "checkpoints", moved / "checkpoints")
    cfg = config_mod.load(run_dir / "config.toml", check=False)
    config_mod.save(cfg.replace(dataset={"path": str(tmp_path / "gone")}), moved / "config.toml")
    assert len(plan(moved, strengths=[1.0])[2]) > 0  # a grid alone does not need them
    with pytest.raises(UserError) as e:
        plan(moved, strengths=[1.0], rank=True)
    assert e.value.code == "no_training_images" and "dataset.path" in e.value.hint
