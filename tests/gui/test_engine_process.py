"""EngineProcess against a real child process (tests/gui/fake_engine.py) replaying canned events."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from lora_studio.core import events as ev
from lora_studio.gui.engine_process import EngineBusy, EngineProcess, _LineBuffer

from fake_engine import RUN_OOM, RUN_SHORT, make_run_dir

TYPES = ("started", "status", "progress", "sample", "checkpoint", "exported", "warning", "error", "finished")


def record(runner: EngineProcess) -> tuple[list[ev.Event], list[str]]:
    got: list[ev.Event] = []
    log: list[str] = []
    runner.event.connect(got.append)
    runner.log_line.connect(log.append)
    return got, log


def is_progress(e: ev.Event) -> bool:
    return isinstance(e, ev.Progress)


def test_every_event_arrives_on_the_event_signal_in_order(qtbot, make_runner, run_dir):
    runner = make_runner()
    got, log = record(runner)
    with qtbot.waitSignal(runner.done, timeout=20_000) as done:
        runner.start(["train", str(run_dir / "config.toml")])
    assert done.args == [True]

    canned = [json.loads(line)["type"] for line in RUN_SHORT.read_text().splitlines()]
    assert [e.type for e in got] == canned  # includes the line written in two halves (the third)
    assert {e.type for e in got} == set(TYPES) - {"error"}
    assert isinstance(got[0], ev.Started) and Path(got[0].run_dir) == run_dir
    samples = [e for e in got if isinstance(e, ev.Sample)]
    assert len(samples) == 8 and all(Path(s.path).is_file() for s in samples)
    assert runner.last_finished == got[-1] and got[-1].status == "completed"
    assert not runner.is_running()

    assert any(line.startswith("fake engine: replaying 46 events") for line in log)
    assert "step 40/40 loss 0.0689" in log
    assert "a library printed this to stdout" in log  # stray stdout text: logged, never an event


def test_a_crash_midway_gives_done_false_and_an_engine_crashed_error(qtbot, make_runner, run_dir):
    runner = make_runner("--crash-after", "10")
    got, _ = record(runner)
    with qtbot.waitSignal(runner.done, timeout=20_000) as done:
        runner.start(["train", str(run_dir / "config.toml")])
    assert done.args == [False]
    assert len(got) == 11  # ten replayed events, then the synthesized error
    error = got[-1]
    assert isinstance(error, ev.Error) and error.code == "engine_crashed"
    assert "exit code 3" in error.message
    assert "RuntimeError: CUDA error: an illegal memory access" in error.hint
    assert not any(isinstance(e, ev.Finished) for e in got)


def test_the_engines_own_error_is_not_doubled(qtbot, make_runner, run_dir):
    runner = make_runner("--replay", str(RUN_OOM))
    got, _ = record(runner)
    with qtbot.waitSignal(runner.done, timeout=20_000) as done:
        runner.start(["train", str(run_dir / "config.toml")])
    assert done.args == [False]
    errors = [e for e in got if isinstance(e, ev.Error)]
    assert [e.code for e in errors] == ["out_of_memory"]
    assert got[-1] == ev.Finished(status="failed", step=8, time=got[-1].time)


def test_exit_zero_without_finished_event_is_a_failure(qtbot, make_runner, run_dir, tmp_path):
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(RUN_SHORT.read_text().splitlines(keepends=True)[:6]))
    runner = make_runner("--replay", str(cut))
    got, _ = record(runner)
    with qtbot.waitSignal(runner.done, timeout=20_000) as done:
        runner.start(["train", str(run_dir / "config.toml")])
    assert done.args == [False]
    assert got[-1].code == "engine_crashed" and "without saying it had finished" in got[-1].message


def test_stop_sends_the_command_and_the_engine_exits_cleanly(qtbot, make_runner, run_dir):
    runner = make_runner("--delay", "0.05")
    got, log = record(runner)
    with qtbot.waitSignal(runner.event, timeout=20_000, check_params_cb=is_progress):
        runner.start(["train", str(run_dir / "config.toml")])
    with qtbot.waitSignal(runner.done, timeout=20_000) as done:
        runner.stop(timeout_ms=10_000)
        assert runner.is_stopping()
    assert done.args == [True]
    assert "stop requested: saving a checkpoint" in log
    finished = got[-1]
    assert isinstance(finished, ev.Finished) and finished.status == "stopped"
    assert isinstance(got[-2], ev.Checkpoint) and got[-2].step == finished.step
    assert (run_dir / "checkpoints" / f"step_{finished.step:06d}" / "state.json").is_file()
    assert finished.step < 40


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def test_an_engine_that_ignores_stop_is_killed_with_its_children(qtbot, make_runner, run_dir):
    runner = make_runner("--ignore-stop", "--spawn-child", "--delay", "0.02", kill_grace_ms=200)
    got, log = record(runner)
    with qtbot.waitSignal(runner.event, timeout=20_000, check_params_cb=is_progress):
        runner.start(["train", str(run_dir / "config.toml")])
    child_pid = next(int(line.split()[-1]) for line in log if line.startswith("child pid"))
    assert psutil.pid_exists(child_pid)
    with qtbot.waitSignal(runner.done, timeout=10_000) as done:
        runner.stop(timeout_ms=300)
    assert done.args == [False]
    assert got[-1].code == "engine_killed"
    qtbot.waitUntil(lambda: _gone(child_pid), timeout=5_000)


def test_two_engines_never_work_on_one_project_at_once(qtbot, make_runner, run_dir, runs_dir, tmp_path):
    training = make_runner("--delay", "0.05")
    with qtbot.waitSignal(training.event, timeout=20_000, check_params_cb=is_progress):
        training.start(["train", str(run_dir / "config.toml")])
    earlier = make_run_dir(runs_dir, "20251201-090000")  # another run of the same project
    export, compare = make_runner(require_finished=False), make_runner()
    with pytest.raises(EngineBusy) as busy:
        export.start(["export", str(earlier), "--events"])
    assert busy.value.message == "Training is still running for this project, so an export cannot start now."
    assert busy.value.hint == "Wait for it to finish, or stop it, then try again."
    with pytest.raises(EngineBusy, match="so a comparison cannot start now"):
        compare.start(["compare", str(earlier)])
    assert not export.is_running() and not compare.is_running()

    elsewhere = make_run_dir(tmp_path / "Other" / "runs", "20260101-120000")  # another project is free
    with qtbot.waitSignal(export.done, timeout=20_000):
        export.start(["export", str(elsewhere), "--events"])

    with qtbot.waitSignal(training.done, timeout=20_000):
        training.stop(timeout_ms=10_000)
    with qtbot.waitSignal(export.done, timeout=20_000):  # its turn now
        export.start(["export", str(earlier), "--events"])
    assert export.last_error.code == "no_checkpoint"  # the fake engine ran, and found no checkpoint there


def test_a_program_that_cannot_start_ends_the_job(qtbot):
    runner = EngineProcess(program="/nonexistent/python3", prefix_args=[])
    errors: list[ev.Error] = []
    runner.event.connect(lambda e: errors.append(e) if isinstance(e, ev.Error) else None)
    with qtbot.waitSignal(runner.done, timeout=10_000) as done:
        runner.start(["train", "x.toml"])
    assert done.args == [False]
    assert errors[0].code == "engine_failed_to_start"
    assert not runner.is_running()
    assert runner.send("stop") is False


def test_line_buffer_joins_partial_lines_and_drops_carriage_returns():
    buf = _LineBuffer()
    assert buf.feed(b'{"type": "sta') == []
    assert buf.feed(b'tus"}\r\nnoise\n{"ty') == ['{"type": "status"}', "noise"]
    assert buf.feed("é".encode()[:1]) == []  # half a UTF-8 character waits too
    assert buf.feed("é".encode()[1:] + b'"}\n') == ['{"tyé"}']
    assert buf.flush() == []
