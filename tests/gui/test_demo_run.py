"""The real engine behind the real panel: the demo project trained, stopped, resumed and exported.

The demo project (geopop pictures + a copy of the world model) is made by `lora-studio demo --no-gui`, as
an artist's first command makes it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lora_studio.core.events import Exported, Progress, Sample
from lora_studio.core.project import Project
from lora_studio.gui.run.panel import RunPanel


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("demo") / "Demo"
    subprocess.run([sys.executable, "-m", "lora_studio", "demo", str(root), "--no-gui"], check=True, capture_output=True,
                   timeout=300)
    return Project(root)


def test_demo_trains_stops_resumes_and_exports_through_the_panel(qtbot, demo):
    cfg = demo.load_config().replace(train={"max_steps": 400, "log_every": 2, "checkpoint_every": 1000},
                                     sample={"every": 1000, "steps": 2})
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_runs_dir(demo.runs_dir)
    panel.set_run_source(lambda: demo.new_run(cfg))
    samples: list[Sample] = []
    panel.runner.event.connect(lambda e: samples.append(e) if isinstance(e, Sample) else None)

    with qtbot.waitSignal(panel.runner.event, timeout=240_000, check_params_cb=lambda e: isinstance(e, Progress)):
        panel.start()
    assert panel.is_training()
    with qtbot.waitSignal(panel.run_finished, timeout=240_000) as stopped:
        panel.stop()
    run_dir, status = stopped.args
    assert status == "stopped"
    assert panel.chart.point_count() > 0
    assert any(s.step == 0 for s in samples)  # the step-0 baseline arrived as a sample event
    step_stopped = panel.runner.last_finished.step
    assert 0 < step_stopped < 400

    exported: list[Exported] = []
    panel.runner.event.connect(lambda e: exported.append(e) if isinstance(e, Exported) else None)
    # Resume to a nearer end: the run's own config decides, as the artist's settings would.
    (Path(run_dir) / "config.toml").write_text(
        (Path(run_dir) / "config.toml").read_text().replace("max_steps = 400", f"max_steps = {step_stopped + 4}"))
    with qtbot.waitSignal(panel.run_finished, timeout=240_000) as finished:
        panel.resume()
    assert finished.args[1] == "completed"
    assert panel.runner.last_finished.step == step_stopped + 4
    assert exported and exported[-1].verified and Path(exported[-1].path).exists()
    assert Path(exported[-1].path).with_suffix(".preview.png").exists()
