"""Shared GUI test fixtures. pytest-qt provides `qtbot` and `qapp`; these add the fake engine and run dirs.

The fake engine (fake_engine.py) is a real Python process replaying a canned event file, so the runner,
the panel and the export dialog are tested against a real QProcess, real pipes and real PNG files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from fake_engine import fake_engine_command, make_run_dir, replay_run  # noqa: E402  (tests/gui is on sys.path)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "MyStyle" / "runs"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def run_dir(runs_dir: Path) -> Path:
    return make_run_dir(runs_dir, "20260101-120000")


@pytest.fixture
def make_runner(qtbot):
    """Builds EngineProcess objects that run the fake engine; any still running are killed at the end."""
    from lora_studio.gui.engine_process import EngineProcess

    made: list[EngineProcess] = []

    def make(*options: str, **kwargs) -> EngineProcess:
        program, prefix = fake_engine_command(*options)
        runner = EngineProcess(program=program, prefix_args=prefix, **kwargs)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        if runner.is_running():
            with qtbot.waitSignal(runner.done, timeout=10_000):
                runner.kill()


@pytest.fixture
def finished_run(run_dir: Path) -> Path:
    return replay_run(run_dir)
