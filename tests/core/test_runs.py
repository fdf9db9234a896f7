"""core/runs.py: the run folder's layout, what a run and a checkpoint are, and the runs of a project."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from lora_studio.core import events as ev
from lora_studio.core.config import Config
from lora_studio.core.errors import ConfigError
from lora_studio.core.runs import CheckpointDir, RunDir, SampleFile, list_runs, sample_name, summaries, summarize


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    (tmp_path / "images").mkdir()
    return Config().replace(model={"base": str(model)}, dataset={"path": str(tmp_path / "images")})


def _checkpoint(run: RunDir, step: int, *, lora: bool = True, state: bool = True) -> Path:
    folder = run.checkpoint(step).path
    folder.mkdir(parents=True)
    if lora:
        (folder / "lora.safetensors").write_bytes(b"weights")
    if state:
        (folder / "state.json").write_text(json.dumps({"step": step}))
    return folder


def test_the_folder_layout(tmp_path):
    run = RunDir(tmp_path / "runs" / "20260101-120000")
    assert run.config == run.path / "config.toml"
    assert run.events == run.path / "events.jsonl"
    assert run.sample(200, 1, 42) == run.path / "samples" / "step_000200_p1_s42.png"
    assert run.checkpoint(200).path == run.path / "checkpoints" / "step_000200"
    assert run.checkpoint(200).lora.name == "lora.safetensors" and run.checkpoint(200).state.name == "state.json"
    assert run.ranking == run.path / "ranking.json"
    assert run.export_file("my_style") == run.path / "my_style.safetensors"
    assert run.export_file("my_style", 200) == run.path / "my_style-step000200.safetensors"


def test_create_writes_the_settings_once_into_a_fresh_folder(tmp_path, cfg):
    runs_dir = tmp_path / "runs"
    run = RunDir.create(runs_dir, cfg)
    assert run.path.parent == runs_dir and run.is_run()
    assert tomllib.loads(run.config.read_text())["output"]["dir"] == str(run.path)
    written = run.config.stat()
    # The engine writes the settings it trains with when it starts: the same settings leave the file alone.
    os.utime(run.config, ns=(1_000_000_000, 1_000_000_000))
    run.write_config(run.load_config())
    assert run.config.stat().st_mtime_ns == 1_000_000_000 and run.config.stat().st_ino == written.st_ino
    run.write_config(run.load_config().replace(train={"max_steps": 7}))
    assert tomllib.loads(run.config.read_text())["train"]["max_steps"] == 7
    second = RunDir.create(runs_dir, cfg)
    assert second.path != run.path  # the same second: still a fresh folder
    assert list_runs(runs_dir) == sorted([run, second], key=lambda r: r.name, reverse=True)


def test_create_refuses_settings_that_cannot_train_before_making_anything(tmp_path):
    with pytest.raises(ConfigError) as e:
        RunDir.create(tmp_path / "runs", Config())
    assert any(p.key == "model.base" for p in e.value.problems)
    assert not (tmp_path / "runs").exists()


def test_a_run_is_a_folder_with_its_settings(tmp_path):
    runs_dir = tmp_path / "runs"
    for name in ("20260101-100000", "20260102-100000", "20260103-100000"):
        (runs_dir / name).mkdir(parents=True)
    (runs_dir / "20260101-100000" / "config.toml").write_text("schema_version = 1\n")
    (runs_dir / "20260102-100000" / "config.toml").write_text("schema_version = 1\n")
    (runs_dir / "20260103-100000" / "events.jsonl").write_text("")  # an event log alone is not a run
    (runs_dir / "notes.txt").write_text("")
    assert [r.name for r in list_runs(runs_dir)] == ["20260102-100000", "20260101-100000"]
    assert list_runs(tmp_path / "nowhere") == [] and list_runs(None) == []


def test_a_checkpoint_is_a_step_folder_with_weights_and_state(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.checkpoints() == []
    _checkpoint(run, 20)
    _checkpoint(run, 40)
    _checkpoint(run, 60, lora=False)  # being written, or damaged: not a checkpoint
    _checkpoint(run, 80, state=False)
    (run.checkpoints_dir / ".step_000100.tmp").mkdir()  # a checkpoint being written
    (run.checkpoints_dir / "step_12").mkdir()  # not the engine's name
    (run.checkpoints_dir / "step_12" / "lora.safetensors").write_bytes(b"")
    (run.checkpoints_dir / "step_12" / "state.json").write_text("{}")
    assert [c.step for c in run.checkpoints()] == [20, 40]
    assert run.checkpoint_steps() == (20, 40)
    assert run.checkpoints()[0].path == run.checkpoints_dir / "step_000020"
    assert CheckpointDir.at(run.checkpoints_dir / "step_000060") == CheckpointDir(60, run.checkpoints_dir / "step_000060")
    assert CheckpointDir.at(run.checkpoints_dir / "step_12") is None


def test_sample_names_read_back(tmp_path):
    run = RunDir(tmp_path / "run")
    run.samples_dir.mkdir(parents=True)
    for step, index, seed in ((20, 1, 43), (20, 0, 42), (0, 0, -1)):
        run.sample(step, index, seed).write_bytes(b"png")
    (run.samples_dir / ".step_000020_p0_s42.png.abc.tmp").write_bytes(b"")
    (run.samples_dir / "cover.png").write_bytes(b"")
    assert [(s.step, s.index, s.seed) for s in run.sample_files()] == [(0, 0, -1), (20, 0, 42), (20, 1, 43)]
    assert SampleFile.parse(Path(sample_name(7, 2, 9))) == SampleFile(7, 2, 9, Path("step_000007_p2_s9.png"))
    assert SampleFile.parse(Path("step_7.png")) is None


def _log(run: RunDir, *events: ev.Event) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    with open(run.events, "a", encoding="utf-8") as f:
        for e in events:
            f.write(e.to_json() + "\n")


def test_summaries_say_how_each_run_ended(tmp_path):
    runs_dir = tmp_path / "runs"
    done, killed = RunDir(runs_dir / "20260102-100000"), RunDir(runs_dir / "20260101-100000")
    for run in (done, killed):
        run.path.mkdir(parents=True)
        run.config.write_text("schema_version = 1\n")
    _log(done, ev.Started(str(done.path), 40, "sd1", time=100.0), ev.Progress(40, 40, 3, 0.05, 1e-4, 2.0, 0.0),
         ev.Exported(str(done.path / "s.safetensors"), 40), ev.Finished("completed", 40))
    _checkpoint(done, 40)
    _log(killed, ev.Started(str(killed.path), 40, "sd1", time=50.0), ev.Progress(10, 40, 1, 0.2, 1e-4, 2.0, 30.0))
    first, second = summaries(runs_dir)
    assert (first.run_id, first.status, first.step, first.loss, first.started_at) == ("20260102-100000", "completed", 40, 0.05, 100.0)
    assert first.exported.endswith("s.safetensors") and first.checkpoint_steps == (40,) and not first.resumable
    assert (second.status, second.step, second.checkpoint_steps, second.resumable) == ("interrupted", 10, (), False)


def test_runs_that_failed_before_their_first_step_leave_the_history_but_the_newest_stays(tmp_path):
    runs_dir = tmp_path / "runs"
    names = ("20260101-100000", "20260102-100000", "20260103-100000", "20260104-100000")
    trained, failed_early, failed_later, newest = (RunDir(runs_dir / n) for n in names)
    for run in (trained, failed_early, failed_later, newest):
        run.path.mkdir(parents=True)
        run.config.write_text("schema_version = 1\n")
    never = (ev.Status("loading", "Loading the base model"), ev.Error("model_unreadable", "The base model cannot be read."),
             ev.Finished("failed"))
    _log(trained, ev.Started(str(trained.path), 40, "sd1", time=1.0), ev.Progress(40, 40, 3, 0.05, 1e-4, 2.0, 0.0),
         ev.Finished("completed", 40))
    _log(failed_early, *never)
    _log(failed_later, ev.Started(str(failed_later.path), 40, "sd1", time=3.0), ev.Progress(5, 40, 1, 0.2, 1e-4, 2.0, 9.0),
         ev.Error("nan_loss", "The loss became NaN."), ev.Finished("failed", 5))
    _log(newest, *never)
    listed = [r.run_id for r in summaries(runs_dir)]
    # The newest is what the artist is reading now; the older one that never trained would only clutter.
    assert listed == ["20260104-100000", "20260103-100000", "20260101-100000"]
    assert failed_early.path.is_dir()  # left out of the list, not deleted


def test_a_long_runs_summary_reads_only_the_two_ends(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config.write_text("schema_version = 1\n")
    _log(run, ev.Started(str(run.path), 100_000, "sd1", time=5.0),
         *(ev.Progress(s, 100_000, 0, 0.1, 1e-4, 2.0, 1.0) for s in range(1, 3001)), ev.Finished("stopped", 3000))
    assert run.events.stat().st_size > 4 * 64 * 1024
    summary = summarize(run)
    assert (summary.started_at, summary.total_steps, summary.step, summary.status) == (5.0, 100_000, 3000, "stopped")


def test_a_run_just_started_has_a_start_time_before_the_engine_says_so(tmp_path, cfg):
    run = RunDir.create(tmp_path / "runs", cfg)  # what Start does; the engine has written nothing yet
    os.utime(run.config, (1_700_000_000, 1_700_000_000))
    assert summarize(run).started_at == 1_700_000_000  # the history shows a time, not the folder's name
