"""`lora-studio train` as the app and a user run it: a real process, JSON lines on stdout, stdin commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from engine_fixtures import assert_lora_loads_changes_and_vanishes_at_zero, make_dataset, tiny_config, write_config

from lora_studio.core import events as ev

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def train_process(config, *extra, stdin=subprocess.DEVNULL):
    return subprocess.Popen(
        [sys.executable, "-m", "lora_studio", "train", str(config), *extra],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )


def events_of(stdout: str) -> list[ev.Event]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    # Every stdout line is an event: stray prints must never reach the stream.
    assert all(ev.from_json(line) is not None for line in lines), lines
    return [ev.from_json(line) for line in lines]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "5_tstyle", n=4)


def test_train_exports_a_lora_that_diffusers_loads(tiny_model_dir, dataset, tmp_path):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"max_steps": 12, "learning_rate": 5e-3},
                      network={"train_text_encoder": True})
    proc = train_process(write_config(cfg, tmp_path / "run.toml"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    events = events_of(out)
    assert [type(e).__name__ for e in events][-2:] == ["Exported", "Finished"]
    assert events[-1].status == "completed"
    # events.jsonl holds the same stream, so a finished run's chart and samples can be reopened.
    logged = list(ev.read_jsonl(tmp_path / "run" / "events.jsonl"))
    assert [e.type for e in logged] == [e.type for e in events]
    exported = events[-2]
    assert exported.verified, exported.problems

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None, local_files_only=True)
    assert_lora_loads_changes_and_vanishes_at_zero(pipe, exported.path)


def _wait_for(proc, type_name: str) -> list[str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if json.loads(line).get("type") == type_name:
            return seen
    raise AssertionError(f"the engine ended before a {type_name} event: {proc.stderr.read()[-2000:]}")


@pytest.mark.parametrize("how", ["stdin", "sigint"])
def test_stop_finishes_the_step_saves_and_exports(tiny_model_dir, dataset, tmp_path, how):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"max_steps": 100000, "log_every": 1})
    proc = train_process(write_config(cfg, tmp_path / "run.toml"), stdin=subprocess.PIPE)
    head = _wait_for(proc, "progress")
    if how == "stdin":
        proc.stdin.write("stop\n")
        proc.stdin.flush()
    else:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    events = events_of("".join(head) + out)
    finished = events[-1]
    assert finished.type == "finished" and finished.status == "stopped" and finished.step > 0
    checkpoint = [e for e in events if e.type == "checkpoint"][-1]
    assert checkpoint.step == finished.step and os.path.isdir(checkpoint.path)
    assert os.path.exists(finished.export_path)


def _error(config_path, *extra) -> tuple[int, ev.Error]:
    done = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(config_path), *extra],
                          capture_output=True, text=True, env=ENV, timeout=300)
    events = events_of(done.stdout)
    errors = [e for e in events if e.type == "error"]
    assert len(errors) == 1 and events[-1].type == "finished" and events[-1].status == "failed", done.stdout
    return done.returncode, errors[0]


def test_user_mistakes_give_one_clear_error(tiny_model_dir, dataset, tmp_path):
    good = tiny_config(tiny_model_dir, dataset, tmp_path / "run")

    rc, e = _error(write_config(good.replace(model={"base": str(tmp_path / "nope")}), tmp_path / "a.toml"))
    assert rc != 0 and e.code == "model_not_found" and "nope" in e.message and e.hint
    # The failed run keeps the reason in its own log, for the app's history.
    logged = list(ev.read_jsonl(tmp_path / "run" / "events.jsonl"))
    assert [x.code for x in logged if x.type == "error"] == ["model_not_found"] and logged[-1].type == "finished"

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    rc, e = _error(write_config(good.replace(dataset={"path": str(empty)}), tmp_path / "b.toml"))
    assert rc != 0 and e.code == "empty_dataset" and str(empty) in e.message

    bad = tmp_path / "c.toml"
    text = (tmp_path / "a.toml").read_text().replace("rank = 4", "rank = 0").replace("resolution = 64", 'resolution = "big"')
    bad.write_text(text)
    rc, e = _error(bad)
    assert rc != 0 and e.code == "bad_config"
    assert "network.rank" in e.message and "train.resolution" in e.message  # every problem at once

    rc, e = _error(tmp_path / "missing.toml")
    assert rc != 0 and e.code == "bad_config" and "missing.toml" in e.message


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")),
                    reason="accelerate's launcher is not installed")
def test_two_cpu_processes_give_one_stream_and_one_export(tiny_model_dir, dataset, tmp_path):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"max_steps": 4, "checkpoint_every": 2})
    config = write_config(cfg, tmp_path / "run.toml")
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    done = subprocess.run(
        [launcher, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "lora_studio.engine", str(config)],
        capture_output=True, text=True, env=ENV, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = events_of(done.stdout)
    assert [e.type for e in events].count("started") == 1
    assert [e.type for e in events].count("finished") == 1 and events[-1].status == "completed"
    started = next(e for e in events if e.type == "started")
    progress = [e for e in events if e.type == "progress"]
    assert progress[-1].step == 4
    # Two processes of batch 2: 4 samples per step.
    assert started.total_steps == 4
    exports = list((tmp_path / "run").glob("*.safetensors"))
    assert [p.name for p in exports] == ["tstyle.safetensors"]


def test_a_project_file_trains_into_a_new_run(tiny_model_dir, dataset, tmp_path):
    from lora_studio.core.project import Project

    project = tmp_path / "MyStyle"
    project.mkdir()
    cfg = tiny_config(tiny_model_dir, dataset, "", train={"max_steps": 2})
    write_config(cfg.replace(output={"dir": ""}), project / "lora_studio.toml")
    first = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(project / "lora_studio.toml")],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    runs = Project(project).list_runs()
    assert len(runs) == 1 and (runs[0] / "tstyle.safetensors").exists()
    started = next(e for e in events_of(first.stdout) if e.type == "started")
    assert started.run_dir == str(runs[0])
    # The project folder itself works too, and --resume continues its newest run (already at its end).
    again = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(project), "--resume"],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert Project(project).list_runs() == runs
    assert next(e for e in events_of(again.stdout) if e.type == "started").start_step == 2


def test_dry_run_checks_settings_budget_and_memory_without_training(tiny_model_dir, dataset, tmp_path):
    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"max_steps": 30})
    done = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(write_config(cfg, tmp_path / "run.toml")), "--dry-run"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    # 4 images x 5 repeats = 20 samples per epoch; 30 steps at batch 2 = 60 samples = 3 epochs.
    assert "Settings are valid" in done.stdout and "30 steps" in done.stdout and "batch 2" in done.stdout
    # The tiny model is not a standard size: no made-up figure for it.
    assert "Memory estimate: none: this base model is under 1 % of the size of " in done.stdout and " GB" not in done.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()

    from lora_studio.core.resources import resource

    standard = cfg.replace(model={"base": str(resource("models", "sd1"))}, train={"resolution": 512})  # the real SD1.5 shape
    done = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(write_config(standard, tmp_path / "sd1.toml")), "--dry-run"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Memory estimate (sd1, 512 px, batch 2): ≈ " in done.stdout and " GB" in done.stdout


def test_dry_run_counts_train_epochs_as_the_run_will(tiny_model_dir, dataset, tmp_path):
    from lora_studio.core.budget import budget_for
    from lora_studio.core.dataset import scan

    cfg = tiny_config(tiny_model_dir, dataset, tmp_path / "run", train={"epochs": 3})
    done = subprocess.run([sys.executable, "-m", "lora_studio", "train", str(write_config(cfg, tmp_path / "run.toml")), "--dry-run"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = budget_for(cfg, scan(cfg.dataset)).steps
    assert steps != cfg.train.max_steps  # the epochs, not the default 1,500 steps
    assert "3 epochs" in done.stdout and f"{steps} steps" in done.stdout, done.stdout


def test_the_engine_entry_is_lora_studio_train(tiny_model_dir, dataset, tmp_path):
    # `python -m lora_studio.engine` (what `accelerate launch -m` runs) parses its own arguments rather than
    # importing the CLI above it: the same arguments, the same help, the same result.
    def both(*args):
        return [subprocess.run([sys.executable, "-m", *entry, *args], capture_output=True, text=True, env=ENV, timeout=300)
                for entry in (["lora_studio", "train"], ["lora_studio.engine"])]

    cli, engine = both("--help")
    assert cli.returncode == engine.returncode == 0 and engine.stdout == cli.stdout and "--dry-run" in cli.stdout
    cli, engine = both()
    assert cli.returncode == engine.returncode == 2 and engine.stderr == cli.stderr
    config = write_config(tiny_config(tiny_model_dir, dataset, tmp_path / "run"), tmp_path / "run.toml")
    cli, engine = both(str(config), "--dry-run")
    assert cli.returncode == engine.returncode == 0 and engine.stdout == cli.stdout and "Settings are valid" in cli.stdout
