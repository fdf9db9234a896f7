"""What a run says about its data before the model loads: images without a caption file are told with
what they actually train with (engine/training/run_data.read)."""

from __future__ import annotations

from engine_fixtures import make_dataset

from lora_studio.core import events as ev
from lora_studio.core.config import Config
from lora_studio.engine.training import run_data


def _warning(cfg: Config) -> str:
    sink = ev.ListSink()
    run_data.read(cfg, sink.emit)
    [warning] = [w for w in sink.of_type(ev.Warning) if w.code == "missing_captions"]
    return warning.message


def test_uncaptioned_images_are_told_what_they_train_with(tmp_path):
    plain = make_dataset(tmp_path / "plain", n=2, captions=False)
    cfg = Config().replace(dataset={"path": str(plain)}, train={"max_steps": 2})
    # No default caption and no N_name folder: the empty caption an earlier message showed as ''.
    assert _warning(cfg) == ("2 images have no caption file and train with no words at all; write captions "
                             "in the Dataset tab, or set dataset.default_caption.")
    named = make_dataset(tmp_path / "kohya" / "10_inkz style", n=1, captions=False)
    cfg = Config().replace(dataset={"path": str(named.parent)}, train={"max_steps": 2})
    assert _warning(cfg) == '1 image has no caption file; it trains with "inkz style" (the default caption, or the folder\'s name).'
