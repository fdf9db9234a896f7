"""The event protocol's own rules (core/events.py): what a reader makes of every line it may be given.

A reader ignores unknown types and unknown fields (fields are only ever added), reads a line of its own
version (`v`: 1, or absent), and turns anything else — a line cut short, not an object, a field missing
or of the wrong type — into None, never into an exception: the app reads these lines from a live process
and from files a crash may have cut short.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pytest

from lora_studio.core import events as ev

# A value of each field type an event uses; a new field type must be added here (and to events._as_type).
SAMPLES: dict[Any, Any] = {
    int: 7, float: 0.25, str: "text, with ünïcode", bool: True,
    list[str]: ["a", "b"], dict[str, Any]: {"train.rank": 8, "nested": [1, None]},
    list[dict[str, Any]]: [{"step": 10, "style": 0.5, "validation_loss": None}],
}


def full_event(cls: type[ev.Event]) -> ev.Event:
    """An instance of `cls` with every field set to a value of its type (none left at its default)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        assert hints[f.name] in SAMPLES, f"{cls.__name__}.{f.name}: no sample for {hints[f.name]}"
        values[f.name] = SAMPLES[hints[f.name]]
    values["time"] = 1_700_000_000.5
    return cls(**values)


def line(**fields: Any) -> str:
    return json.dumps({"v": 1, "time": 1.0, **fields})


@pytest.mark.parametrize("cls", list(ev.EVENT_TYPES.values()), ids=list(ev.EVENT_TYPES))
def test_every_event_type_round_trips(cls):
    event = full_event(cls)
    data = json.loads(event.to_json())
    assert data["v"] == ev.PROTOCOL_VERSION == 1 and data["type"] == cls.type and data["time"] == 1_700_000_000.5
    assert ev.from_json(event.to_json()) == event
    assert ev.from_dict(event.to_dict()) == event
    # Only what the constructor needs, the rest left to the defaults, comes back the same way too.
    required = {f.name: getattr(event, f.name) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert ev.from_json(line(type=cls.type, **required)) == cls(**required, time=1.0)


def test_every_event_type_is_listed_once_under_its_name():
    assert all(name == cls.type and name for name, cls in ev.EVENT_TYPES.items())
    assert len({cls for cls in ev.EVENT_TYPES.values()}) == len(ev.EVENT_TYPES)


@pytest.mark.parametrize("kind", ["telemetry", "", "STATUS", "Status"])
def test_unknown_types_are_ignored(kind):
    assert ev.from_json(line(type=kind, phase="training")) is None


def test_a_line_without_a_type_or_with_a_type_that_is_no_name_is_ignored():
    assert ev.from_json(line(phase="training")) is None
    for kind in (None, 3, ["status"], {"status": 1}, True):
        assert ev.from_json(line(type=kind, phase="training")) is None


def test_unknown_fields_are_ignored():
    e = ev.from_json(line(type="status", phase="training", message="go", gpu_temperature=71, extra={"a": [1]}))
    assert e == ev.Status("training", "go", time=1.0)


@pytest.mark.parametrize("text", [
    "", "   ", "\n", "not json", "{", '{"v": 1, "type": "status", "phase": "train', '{"type": "status"} trailing',
    "[1, 2]", '"status"', "3", "null", "true",  # JSON, but not an object
    "[" * 100_000,  # nested beyond Python's recursion limit
    '{"type": "status", "phase": NaN}',
])
def test_malformed_lines_give_none(text):
    assert ev.from_json(text) is None


@pytest.mark.parametrize("fields", [
    {"type": "progress", "step": "12", "total_steps": 100, "epoch": 1, "loss": 0.1, "lr": 1e-4, "samples_per_s": 2.0, "eta_s": 5.0},
    {"type": "progress", "step": 12.0, "total_steps": 100, "epoch": 1, "loss": 0.1, "lr": 1e-4, "samples_per_s": 2.0, "eta_s": 5.0},
    {"type": "progress", "step": True, "total_steps": 100, "epoch": 1, "loss": 0.1, "lr": 1e-4, "samples_per_s": 2.0, "eta_s": 5.0},
    {"type": "progress", "step": 12, "total_steps": 100, "epoch": 1, "loss": "0.1", "lr": 1e-4, "samples_per_s": 2.0, "eta_s": 5.0},
    {"type": "progress", "step": 12, "total_steps": 100, "epoch": 1, "loss": None, "lr": 1e-4, "samples_per_s": 2.0, "eta_s": 5.0},
    {"type": "progress", "step": 12, "total_steps": 100, "epoch": 1, "loss": 1e400, "lr": 1e-4, "samples_per_s": 2.0, "eta_s": 5.0},
    {"type": "status", "phase": 3},
    {"type": "status", "phase": "training", "message": ["go"]},
    {"type": "sample", "step": 10, "path": None, "prompt": "p", "seed": 1},
    {"type": "exported", "path": "a.safetensors", "verified": "yes"},
    {"type": "exported", "path": "a.safetensors", "problems": "a problem"},
    {"type": "exported", "path": "a.safetensors", "problems": ["fine", 3]},
    {"type": "error", "code": "x", "message": "m", "fix": ["train.rank", 4]},
    {"type": "error", "code": "x", "message": "m", "fix": {"train.rank": 4}, "hint": None},
    {"type": "ranking", "step": 10, "sentence": "s", "scores": [1, 2]},
    {"type": "finished", "status": "completed", "time": "yesterday"},
])
def test_wrong_field_types_give_none(fields):
    assert ev.from_json(json.dumps({"v": 1, **fields})) is None


@pytest.mark.parametrize("fields", [
    {"type": "started", "total_steps": 10, "model_kind": "sd1"},  # no run_dir
    {"type": "progress", "step": 1},
    {"type": "sample", "step": 1, "path": "a.png", "prompt": "p"},  # no seed
    {"type": "error", "message": "m"},  # no code
    {"type": "finished"},
])
def test_missing_required_fields_give_none(fields):
    assert ev.from_json(line(**fields)) is None


def test_an_int_where_a_float_goes_is_read_as_a_float():
    e = ev.from_json(line(type="progress", step=3, total_steps=10, epoch=1, loss=1, lr=0, samples_per_s=2, eta_s=0))
    assert e == ev.Progress(3, 10, 1, 1.0, 0.0, 2.0, 0.0, time=1.0) and isinstance(e.loss, float)


def test_the_version_field():
    assert json.loads(ev.Status("training").to_json())["v"] == ev.PROTOCOL_VERSION == 1
    status = {"type": "status", "phase": "training", "time": 1.0}
    assert ev.from_json(json.dumps({"v": 1, **status})) == ev.Status("training", time=1.0)
    assert ev.from_json(json.dumps(status)) == ev.Status("training", time=1.0)  # no `v`: read as version 1
    for other in (2, 0, "1", 1.5, True, None):  # another version (or no version number at all)
        assert ev.from_json(json.dumps({"v": other, **status})) is None, other


def test_reading_a_log_skips_what_a_crash_cut_short(tmp_path):
    log = tmp_path / "events.jsonl"
    good = [ev.Status("training", time=1.0), ev.Checkpoint(5, "ck/step_000005", time=2.0)]
    cut = ev.Warning("Skipped the broken file “bild.png”", time=3.0).to_json().encode()
    cut = cut[: cut.index("“".encode()) + 1]  # cut inside a multi-byte character
    log.write_bytes(b"".join(e.to_json().encode() + b"\n" for e in good) + b"garbage\n\n[1]\n" + cut)
    assert list(ev.read_jsonl(log)) == good
    assert list(ev.read_jsonl(tmp_path / "missing.jsonl")) == []
