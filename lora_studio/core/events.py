"""The engine's event protocol (version 1): one JSON object per line.

Every line is `{"v": 1, "type": "...", "time": <unix seconds>, ...}`. Readers ignore unknown types and
unknown fields; fields are only ever added. One frozen dataclass per event type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Protocol, get_args, get_origin, get_type_hints

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = ""
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "type": self.type, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False, default=str)


@dataclass(frozen=True)
class Started(Event):
    type: ClassVar[str] = "started"
    run_dir: str
    total_steps: int
    model_kind: str
    prediction: str = "epsilon"
    start_step: int = 0  # > 0 when resumed
    device: str = ""
    num_images: int = 0


@dataclass(frozen=True)
class Status(Event):
    type: ClassVar[str] = "status"
    phase: str  # loading | caching | training | sampling | saving | exporting
    message: str = ""


@dataclass(frozen=True)
class Progress(Event):
    type: ClassVar[str] = "progress"
    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    samples_per_s: float
    eta_s: float


@dataclass(frozen=True)
class Validation(Event):
    """The loss on held-out images (dataset.validation_split), with fixed noise and timesteps, so values
    at different steps are comparable (the training loss is not: every step draws new noise)."""

    type: ClassVar[str] = "validation"
    step: int
    loss: float
    images: int = 0


@dataclass(frozen=True)
class Ranking(Event):
    """The checkpoint to keep (core/ranking.py): its step, one sentence why, and every checkpoint's
    scores ({"step", "style", "prompts", "validation_loss"}); also written to the run's ranking file."""

    type: ClassVar[str] = "ranking"
    step: int
    sentence: str
    scores: list[dict[str, Any]] = field(default_factory=list)
    base_prompts: float = 0.0


@dataclass(frozen=True)
class Sample(Event):
    type: ClassVar[str] = "sample"
    step: int
    path: str
    prompt: str
    seed: int
    index: int = 0


@dataclass(frozen=True)
class CompareCell(Event):
    """One image of a comparison grid: a checkpoint at a LoRA strength, with or without the trigger.
    step 0 with strength 0 is the base model (the baseline row).

    The same record is a cell of the grid's file on disk: the same fields, less `time`, with `path` stored as
    `file`, relative to the grid's folder (so a copied or moved folder still opens)."""

    type: ClassVar[str] = "compare_cell"
    step: int
    strength: float
    trigger: bool
    prompt_index: int
    prompt: str
    seed: int
    path: str

    def grid_entry(self, folder: Path) -> dict[str, Any]:
        """This cell as the grid file holds it; the image must lie in `folder`."""
        entry = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("time", "path")}
        return entry | {"file": Path(self.path).relative_to(folder).as_posix()}

    @classmethod
    def from_grid_entry(cls, item: Any, folder: Path) -> CompareCell | None:
        """A grid file's cell read back, or None when a key the grid needs is missing or of the wrong kind.
        Files of every version load: step, strength, trigger, prompt_index and file are needed; prompt and
        seed are read when present (hand-written or older grids may lack them)."""
        if not isinstance(item, dict):
            return None
        step, strength, trigger, index, name = (item.get(k) for k in ("step", "strength", "trigger", "prompt_index", "file"))
        if not (_is_int(step) and _is_int(index) and isinstance(trigger, bool) and isinstance(name, str) and name):
            return None
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
            return None
        path = (Path(folder) / name).resolve()
        if not path.is_relative_to(Path(folder).resolve()):
            return None  # a file name that climbs out of the comparison's folder is not ours to show
        prompt, seed = item.get("prompt", ""), item.get("seed", 0)
        return cls(step=step, strength=float(strength), trigger=trigger, prompt_index=index,
                   prompt=prompt if isinstance(prompt, str) else "", seed=seed if _is_int(seed) else 0, path=str(path))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is not a step


@dataclass(frozen=True)
class Checkpoint(Event):
    type: ClassVar[str] = "checkpoint"
    step: int
    path: str


@dataclass(frozen=True)
class Exported(Event):
    type: ClassVar[str] = "exported"
    path: str
    step: int = 0
    verified: bool = False
    problems: list[str] = field(default_factory=list)
    preview: str = ""


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the protocol's name
    type: ClassVar[str] = "warning"
    message: str
    code: str = ""
    path: str = ""


@dataclass(frozen=True)
class Error(Event):
    type: ClassVar[str] = "error"
    code: str
    message: str
    hint: str = ""
    # Settings that address the cause, {"section.key": value}, for a reader to offer as one click
    # (an out_of_memory error carries the next smaller settings); empty when there is nothing to apply.
    fix: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished(Event):
    type: ClassVar[str] = "finished"
    status: str  # completed | stopped | failed
    step: int = 0
    export_path: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (Started, Status, Progress, Validation, Ranking, Sample, CompareCell, Checkpoint, Exported, Warning, Error, Finished)
}


def from_dict(data: dict[str, Any]) -> Event | None:
    """The event a decoded line holds, or None: for an unknown type, another version of the protocol, a
    required field missing or a field of the wrong type. Unknown fields are ignored (fields are only ever
    added). A line without `v` is read as version 1 (hand-written lines and test engines leave it out); any
    other version means the meaning of fields changed, so it is not read as this one."""
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    version = data.get("v", PROTOCOL_VERSION)
    if cls is None or not _is_int(version) or version != PROTOCOL_VERSION:
        return None
    values = {}
    for name, hint in _field_types(cls).items():
        if name in data:
            value = _as_type(data[name], hint)
            if value is _WRONG:
                return None
            values[name] = value
    try:
        return cls(**values)
    except TypeError:  # a required field is missing
        return None


_WRONG = object()


@functools.cache
def _field_types(cls: type[Event]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _as_type(value: Any, hint: Any) -> Any:
    """`value` as a field of type `hint` holds it (an int where a float goes becomes a float), or _WRONG."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else _WRONG
    if hint is int:
        return value if _is_int(value) else _WRONG
    if hint in (str, bool):
        return value if isinstance(value, hint) else _WRONG
    if origin is list:
        if not isinstance(value, list):
            return _WRONG
        items = [_as_type(v, args[0]) for v in value]
        return _WRONG if any(v is _WRONG for v in items) else items
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return _WRONG
        items = {k: _as_type(v, args[1]) for k, v in value.items()}
        return _WRONG if any(v is _WRONG for v in items.values()) else items
    raise TypeError(f"an event field of type {hint} needs a rule here")  # caught by the tests, not at run time


def from_json(line: str) -> Event | None:
    """The event of one line, or None when the line is not one (never raises)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, cut short, or nested beyond reason
        return None
    return from_dict(data) if isinstance(data, dict) else None


def read_jsonl(path: Path) -> Iterator[Event]:
    """The events of an event log file, skipping lines a crash may have cut short."""
    try:
        # A crash can cut a line inside a multi-byte character: that line is skipped, not the rest.
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                event = from_json(line)
                if event is not None:
                    yield event
    except FileNotFoundError:
        return


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class ListSink:
    """Collects events in memory (tests, and the engine when run in-process)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, cls: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]
