"""Dataset health with masked loss on: a mask that cannot be read is an error with a fix, images without a mask a note."""

from __future__ import annotations

from PIL import Image
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QLabel, QPushButton

from lora_studio.gui.dataset.bulk_actions import BulkActions
from lora_studio.gui.dataset.caption_editor import CaptionWriter
from lora_studio.gui.dataset.health_panel import HealthPanel
from lora_studio.gui.store import ConfigStore

from dataset_helpers import isolated_settings, make_project  # noqa: F401 (fixture)


def test_mask_findings_are_shown_with_their_severity_and_the_broken_one_can_be_left_out(qtbot, tmp_path, isolated_settings):
    project = make_project(tmp_path / "p", 3)
    masks = project.images_dir / "masks"
    masks.mkdir()
    (masks / "img000.png").write_bytes(b"not a png")
    Image.new("L", (10, 10), 255).save(masks / "img001.png")  # not its image's size
    store = ConfigStore(save_delay_ms=0)
    store.load(project)
    store.set("train.resolution", 64)
    store.set("dataset.masked_loss", True)
    undo, writer = QUndoStack(), CaptionWriter()
    panel = HealthPanel(store, undo, writer, BulkActions(undo, writer, store, lambda: []))
    qtbot.addWidget(panel)
    panel.show()
    with qtbot.waitSignal(panel.checked, timeout=10_000):
        panel.check()
    kinds = {f.kind: f for f in panel.findings}
    assert {"mask_unreadable", "mask_size", "mask_missing"} <= kinds.keys()
    rows = [panel.list.itemWidget(panel.list.item(i)) for i in range(panel.list.count())]
    severity = {row.findChildren(QLabel)[1].text(): row.findChildren(QLabel)[0].objectName() for row in rows}
    [broken] = [t for t in severity if "masks/img000.png" in t]
    assert severity[broken] == "sev_error" and panel.findings[0].kind == "mask_unreadable"  # listed first
    [stretched] = [t for t in severity if "masks/img001.png" in t]
    assert severity[stretched] == "sev_warn"
    [missing] = [t for t in severity if "have no mask" in t]
    assert severity[missing] == "sev_info" and "Masked loss" in missing and "{" not in missing  # the setting by its label
    button = next(b for b in rows[0].findChildren(QPushButton) if b.text() == "Leave out")
    button.click()
    assert store.config.dataset.exclude == ["img000.png"]
