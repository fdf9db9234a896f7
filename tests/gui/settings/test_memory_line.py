"""The Settings tab's memory line: the engine is asked about the GPU in a real child process, and the line
says what --dry-run says, with the nearest settings that fit one click away."""

from __future__ import annotations

import json
import sys

from PySide6.QtCore import Qt

from lora_studio.core.fit_advice import memory_summary
from lora_studio.gui.device_probe import DeviceProbe
from lora_studio.gui.settings.panel import SettingsPanel
from lora_studio.gui.store import ConfigStore

from dataset_helpers import isolated_settings, make_project  # noqa: F401 (fixture)

GPU_8GB = {"gpu": "Test GPU 8GB", "total_bytes": 8_000_000_000, "bf16": True}


def _standing_in_for_the_engine(info: dict) -> DeviceProbe:
    # A real process that answers `device --json` with a chosen GPU (this machine has none).
    return DeviceProbe(program=sys.executable, prefix_args=["-c", f"print({json.dumps(json.dumps(info))})"])


def test_the_engine_is_asked_about_the_gpu(qtbot):
    probe = DeviceProbe()  # the real `python -m lora_studio device --json`
    with qtbot.waitSignal(probe.found, timeout=60_000) as found:
        probe.start()
    info = found.args[0]
    assert set(info) >= {"gpu", "total_bytes", "bf16"} and "error" not in info
    assert isinstance(info["total_bytes"], int) and (info["gpu"] == "") == (info["total_bytes"] == 0)


def test_an_engine_that_cannot_start_is_said_plainly(qtbot):
    probe = DeviceProbe(program="/nonexistent/python")
    with qtbot.waitSignal(probe.found, timeout=10_000) as found:
        probe.start()
    assert found.args[0]["total_bytes"] == 0 and "could not start" in found.args[0]["error"]


def test_settings_that_do_not_fit_offer_the_nearest_that_do(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 0)
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    for key, value in {"model.kind": "sdxl", "train.resolution": 1024, "train.batch_size": 2,
                       "train.gradient_checkpointing": False, "train.mixed_precision": "bf16", "train.base_weights": "bf16"}.items():
        store.set(key, value)
    probe = _standing_in_for_the_engine(GPU_8GB)
    panel = SettingsPanel(store, find_models=False, device_probe=probe)
    qtbot.addWidget(panel)
    line = panel.memory
    assert line.label.text() == "Checking the GPU…"
    with qtbot.waitSignal(probe.found, timeout=20_000):
        panel.show()
    expected = memory_summary(store.config, GPU_8GB["total_bytes"], GPU_8GB["gpu"])
    assert line.label.text() == expected.text and expected.verdict == "does_not_fit"
    assert " on Test GPU 8GB. Nearest that fits: " in line.label.text()
    assert line.fix_button.isVisible()

    qtbot.mouseClick(line.fix_button, Qt.MouseButton.LeftButton)
    for key, value in expected.fix[1].items():
        assert store.get(key) == value
    assert line.summary.verdict in ("fits", "tight") and not line.fix_button.isVisible()

    store.set("train.batch_size", 8)  # an edit that changes the estimate updates the line (after it settles)
    qtbot.waitUntil(lambda: line.summary.verdict == "does_not_fit", timeout=3_000)


def test_without_a_gpu_the_line_says_the_cpu_will_train(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 0)
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    panel = SettingsPanel(store, find_models=False, device_probe=_standing_in_for_the_engine({"gpu": "", "total_bytes": 0}))
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.memory._probe.found, timeout=20_000):
        panel.show()
    assert panel.memory.label.text().startswith("No NVIDIA GPU found: training would run on the CPU")
    assert not panel.memory.fix_button.isVisible()


def test_a_value_the_estimate_does_not_know_is_said_not_raised(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 0)
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    store.set("train.mixed_precision", "fp4")  # as a hand-edited project file might have it
    panel = SettingsPanel(store, find_models=False, device_probe=_standing_in_for_the_engine(GPU_8GB))
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.memory._probe.found, timeout=20_000):
        panel.show()
    assert panel.memory.label.text().startswith("The memory estimate needs valid settings")
    assert store.problems_for("train.mixed_precision")  # and the field itself says what is wrong
