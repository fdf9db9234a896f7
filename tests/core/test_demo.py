"""The demo project: made in the app's own process without torch, and a clear message where it cannot be."""

from __future__ import annotations

import subprocess
import sys

from lora_studio.core import demo
from lora_studio.core.captions import read_caption
from lora_studio.core.project import Project


def test_the_demo_project_is_made_without_torch_and_opens_as_a_project(tmp_path):
    code = (f"import sys; from lora_studio.core import demo; demo.create({str(tmp_path / 'Demo')!r}); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # the window's process can make it and still never load torch
    project = Project(tmp_path / "Demo")
    images = sorted((project.root / "images").glob("*.png"))
    assert len(images) == demo.N_IMAGES
    assert all(read_caption(p.with_suffix(".txt")).startswith(demo.TRIGGER) for p in images)
    cfg = project.load_config()
    assert (project.root / cfg.model.base / "unet").is_dir() and cfg.output.trigger == demo.TRIGGER


def test_the_demo_command_says_where_it_cannot_write(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = subprocess.run([sys.executable, "-m", "lora_studio", "demo", str(blocker / "Demo"), "--no-gui"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Could not create the demo project in" in done.stderr and "lora-studio demo PATH" in done.stderr
    assert "Traceback" not in done.stderr
