"""One decoder for every image on screen and one pool for all background work (gui/images.py, gui/tasks.py)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QObject
from PySide6.QtGui import QImage

import lora_studio.gui
from lora_studio.gui import tasks
from lora_studio.gui.images import ImageLoader, decode_image, next_priority

GUI = Path(lora_studio.gui.__file__).parent


def _uses(name: str) -> set[str]:
    """The gui modules that mention `name` in code (a call, a base class, an attribute), not in comments."""
    found = set()
    for path in GUI.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name):
                found.add(path.relative_to(GUI).as_posix())
    return found


def test_one_pool_and_one_decoder_in_the_gui():
    assert _uses("QThreadPool") == {"tasks.py"}
    assert _uses("QRunnable") == {"tasks.py"}
    assert _uses("QImageReader") == set()
    assert _uses("thumbnail") == {"images.py"}  # Pillow's Image.thumbnail: the scaling step of decode_image


def _rgba(path: Path, size=(300, 150)) -> Path:
    # Left half opaque red, right half fully transparent (which training lays over white).
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, size[0] // 2, size[1]))
    im.save(path)
    return path


def test_samples_and_thumbnails_decode_as_training_sees_them(qtbot, tmp_path):
    loader = ImageLoader()
    with qtbot.waitSignal(loader.loaded, timeout=10_000) as got:
        loader.request(str(_rgba(tmp_path / "sample.png")), 100)
    path, side, image = got.args
    assert (path, side, image.size().width(), image.size().height()) == (str(tmp_path / "sample.png"), 100, 100, 50)
    assert image.pixelColor(10, 25).getRgb()[:3] == (255, 0, 0)
    assert image.pixelColor(90, 25).getRgb()[:3] == (255, 255, 255)  # transparency over white, not black
    assert decode_image(tmp_path / "sample.png", 1000).size().width() == 300  # fitted, never enlarged

    with qtbot.waitSignal(loader.loaded, timeout=10_000) as got:
        loader.request(str(tmp_path / "gone.png"), 100)
    assert got.args[2].isNull()  # a missing file is a null image (the button then says "missing")


def _hold_every_thread() -> list[threading.Event]:
    """Occupy each of the pool's threads, one event each to let it go: what is queued meanwhile waits, and
    a single thread let go then runs it in priority order."""
    started = threading.Semaphore(0)
    releases = [threading.Event() for _ in range(tasks.pool().maxThreadCount())]

    def hold(release: threading.Event):
        started.release()
        release.wait(10)

    for release in releases:
        tasks.run_in_background(lambda r=release: hold(r), lambda _r: None)
    for _ in releases:
        assert started.acquire(timeout=10)
    return releases


def test_tasks_run_before_queued_image_decodes_and_the_newest_image_first(qtbot):
    order: list[str] = []
    first, *others = _hold_every_thread()
    for i in range(6):
        tasks.run_in_background(lambda i=i: order.append(f"image {i}"), lambda _r: None, priority=next_priority())
    tasks.run_in_background(lambda: order.append("scan"), lambda _r: None)
    first.set()  # one thread free: it takes the queue in priority order
    qtbot.waitUntil(lambda: len(order) == 7, timeout=10_000)
    for release in others:
        release.set()
    assert tasks.wait_for_background(10_000)
    assert order == ["scan"] + [f"image {i}" for i in reversed(range(6))]


def test_cancel_pending_drops_an_owners_queued_jobs(qtbot):
    owner, other = QObject(), QObject()
    ran, landed = [], []
    releases = _hold_every_thread()
    tasks.run_in_background(lambda: ran.append("owner's"), landed.append, owner=owner)
    tasks.run_in_background(lambda: ran.append("other's"), landed.append, owner=other)
    tasks.cancel_pending(owner)
    for release in releases:
        release.set()
    assert tasks.wait_for_background(10_000)
    # The other's result lands on the GUI thread; the cancelled job's relay is released there too.
    qtbot.waitUntil(lambda: landed == [None] and not any(r.owner is owner for r in tasks._live), timeout=5_000)
    assert ran == ["other's"]
