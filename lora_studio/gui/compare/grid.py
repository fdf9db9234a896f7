"""The comparison grid itself: what a run offers to compare, a saved grid read back, and the widget
that lays the images out (rows: the base model, then each checkpoint; columns: strengths by trigger on / off).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage
from PySide6.QtWidgets import QGridLayout, QLabel, QToolButton, QWidget

from lora_studio.core import events as ev
from lora_studio.core.captions import join_tags, remove_trigger, split_tags
from lora_studio.core.runs import RunDir
from lora_studio.gui.images import show_thumbnail

THUMB_SIZE = 128
PREVIEW_SIZE = 512
MAX_STRENGTH = 2.0
HINT_LINES = 8
DEFAULT_STRENGTHS = (0.5, 1.0)

# (prompt_index, row step (0: the base model), trigger, strength rounded); the base row's strength is 0.
CellKey = tuple[int, int, bool, float]
Column = tuple[bool, float | None]  # (trigger, strength); None: a trigger group with no LoRA column yet


def format_strength(strength: float) -> str:
    text = f"{strength:g}"
    return text if any(c in text for c in ".e") else f"{text}.0"


def parse_strengths(text: str) -> list[float]:
    """"0.5, 1.0" -> [0.5, 1.0] (sorted, no repeats); ValueError with a sentence that says how to write them."""
    values = []
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"“{part.strip()}” is not a number. Write strengths like 0.5, 1.0") from None
        if not math.isfinite(value) or not 0 < value <= MAX_STRENGTH:
            raise ValueError(f"Strengths go from above 0 up to {MAX_STRENGTH:g}; {part.strip()} is outside.")
        values.append(round(value, 4))
    if not values:
        raise ValueError("Give at least one strength, e.g. 0.5, 1.0")
    return sorted(set(values))


def is_base(cell: ev.CompareCell) -> bool:
    return cell.step == 0 or cell.strength == 0


def cell_key(cell: ev.CompareCell) -> CellKey:
    if is_base(cell):
        return (cell.prompt_index, 0, cell.trigger, 0.0)
    return (cell.prompt_index, cell.step, cell.trigger, round(cell.strength, 4))


@dataclass(frozen=True)
class RunSettings:
    trigger: str = ""
    prompts: tuple[str, ...] = ()
    sampling_steps: int = 25


def read_run_settings(run_dir: Path) -> RunSettings:
    """The bits of the run's settings the dialog needs, read leniently: it must open on any run."""
    try:
        with open(RunDir(run_dir).config, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return RunSettings()
    output = data.get("output") if isinstance(data.get("output"), dict) else {}
    sample = data.get("sample") if isinstance(data.get("sample"), dict) else {}
    trigger = output.get("trigger", "")
    prompts = sample.get("prompts", [])
    steps = sample.get("steps", 25)
    return RunSettings(
        trigger=trigger.strip() if isinstance(trigger, str) else "",
        prompts=tuple(p for p in prompts if isinstance(p, str) and p.strip()) if isinstance(prompts, list) else (),
        sampling_steps=steps if isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= 1000 else 25,
    )


@dataclass
class SavedGrid:
    folder: Path
    cells: list[ev.CompareCell]
    saved_at: float
    status: str = ""  # the engine's: completed | stopped | failed | running (it was ended mid-grid)


def load_saved_grid(run_dir: Path) -> SavedGrid | None:
    """The newest comparison grid of the run that holds at least one usable cell.

    Accepted shapes: a list of cells, or an object with a "cells" list; each cell is read by
    CompareCell.from_grid_entry, and the ones it cannot use are skipped.
    """
    found = []
    for grid in RunDir(run_dir).grid_files():
        try:
            found.append((grid.stat().st_mtime, grid.parent.name, grid))
        except OSError:
            continue
    for mtime, _name, grid in sorted(found, reverse=True):
        try:
            data = json.loads(grid.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        items = data.get("cells") if isinstance(data, dict) else data
        if not isinstance(items, list):
            continue
        cells = [c for item in items if (c := ev.CompareCell.from_grid_entry(item, grid.parent)) is not None]
        status = data.get("status") if isinstance(data, dict) else ""
        if cells:
            return SavedGrid(grid.parent, cells, mtime, status if isinstance(status, str) else "")
    return None


def has_trigger_variant(prompt: str, trigger: str) -> bool:
    """Whether the engine makes a without-the-trigger image of this prompt: only when the trigger word is one
    of its comma-separated tags (the engine's rule, the same remove_trigger)."""
    return bool(trigger) and remove_trigger(prompt, trigger) != join_tags(split_tags(prompt))


@dataclass
class Plan:
    """What Generate asked for: lets the grid show its full shape before the first image arrives."""

    steps: tuple[int, ...] = ()
    strengths: tuple[float, ...] = ()
    prompts: tuple[str, ...] = ()
    triggers: tuple[tuple[bool, ...], ...] = ()  # per prompt: (True,) or (True, False)

    def prompt_triggers(self, index: int) -> tuple[bool, ...]:
        return self.triggers[index] if index < len(self.triggers) else ()

    def total(self) -> int:
        return sum(len(t) for t in self.triggers) * (1 + len(self.steps) * len(self.strengths))


# --- the grid ---------------------------------------------------------------------------------------------

_CELL_STYLE = (
    "QToolButton {{ border: 2px {line} {border}; border-radius: 6px; background: {background}; padding: 2px;"
    " color: #80868e; }} QToolButton:hover {{ border-color: {hover}; }}"
)
_HIGHLIGHT = "#3d6df2"


class _Cell(QToolButton):
    def __init__(self, key: CellKey, size: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.key = key
        self.cell: ev.CompareCell | None = None
        self.loaded = False
        self._state = ("pending", False, False)
        self.setIconSize(QSize(size, size))
        self.setFixedSize(size + 12, size + 12)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.set_pending(True)

    def set_pending(self, waiting: bool) -> None:
        """No image (yet): a dashed box, 'waiting' while the engine runs, 'not made' after."""
        self.cell, self.loaded = None, False
        self.setIcon(QIcon())
        self.setText("waiting…" if waiting else "not made")
        self.setEnabled(False)
        self.setToolTip("")
        self._restyle("pending")

    def set_cell(self, cell: ev.CompareCell) -> None:
        self.cell = cell
        self.setEnabled(True)
        if not self.loaded:
            self.setText("…")
        what = ("Base model (no LoRA)" if is_base(cell)
                else f"Step {cell.step:,} · strength {format_strength(cell.strength)}")
        self.setToolTip(f"{what} · seed {cell.seed}\n{cell.prompt}\n(click to see it larger)")
        self._restyle("image")

    def set_image(self, image: QImage) -> None:
        self.loaded = True
        show_thumbnail(self, image, self.cell.path if self.cell else "")

    def set_selected(self, row_selected: bool, selected: bool) -> None:
        self._restyle(self._state[0], row_selected, selected)

    def _restyle(self, kind: str, row_selected: bool | None = None, selected: bool | None = None) -> None:
        row_selected = self._state[1] if row_selected is None else row_selected
        selected = self._state[2] if selected is None else selected
        self._state = (kind, row_selected, selected)
        if kind == "pending":
            style = dict(line="dashed", border="#4a4f58", background="transparent", hover="#4a4f58")
        else:
            style = dict(line="solid", border=_HIGHLIGHT if selected else "transparent",
                         background="rgba(61, 109, 242, 60)" if row_selected else "transparent",
                         hover=_HIGHLIGHT if selected else "#6b7078")
        self.setStyleSheet(_CELL_STYLE.format(**style))


class CompareGrid(QWidget):
    """One prompt's grid: a header of trigger groups and strengths, a row per checkpoint under the base model."""

    clicked = Signal(object)  # ev.CompareCell

    def __init__(self, parent: QWidget | None = None, thumb_size: int = THUMB_SIZE):
        super().__init__(parent)
        self._thumb_size = thumb_size
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(8, 8, 8, 8)
        self._grid.setHorizontalSpacing(4)
        self._grid.setVerticalSpacing(4)
        self._cells: dict[CellKey, _Cell] = {}
        self._row_labels: dict[int, QLabel] = {}
        self._column_labels: list[str] = []
        self._selected_step: int | None = None
        self._selected_key: CellKey | None = None
        self._recommended: int | None = None  # the ranking's checkpoint, marked in its row header

    # --- structure ----------------------------------------------------------------------------------

    def set_structure(self, prompt_index: int, rows: list[int], columns: list[Column], trigger_word: str,
                      waiting: bool) -> None:
        """Rebuild for one prompt: rows are steps (0 = base model), columns (trigger, strength) pairs."""
        while self._grid.count():
            item = self._grid.takeAt(0)
            if item.widget() is not None:
                item.widget().hide()
                item.widget().deleteLater()
        for c in range(self._grid.columnCount()):
            self._grid.setColumnMinimumWidth(c, 0)
            self._grid.setColumnStretch(c, 0)
        for r in range(self._grid.rowCount()):
            self._grid.setRowStretch(r, 0)
        self._cells.clear()
        self._row_labels.clear()
        self._column_labels = []

        groups = list(dict.fromkeys(t for t, _ in columns))
        show_groups = len(groups) > 1 or bool(trigger_word)
        # Grid columns: 0 row headers, then each group's strengths, a narrow gap between groups.
        places: dict[Column, int] = {}
        spans: dict[bool, tuple[int, int]] = {}
        col = 1
        for g, trigger in enumerate(groups):
            if g:
                self._grid.setColumnMinimumWidth(col, 14)
                col += 1
            first = col
            for column in (c for c in columns if c[0] == trigger):
                places[column] = col
                col += 1
            spans[trigger] = (first, col - first)
        self._grid.setColumnStretch(col, 1)  # keeps the grid to the left when the window is wider

        header_row = 0
        if show_groups:
            for trigger, (first, span) in spans.items():
                label = QLabel(group_title(trigger, trigger_word), self)
                label.setAlignment(Qt.AlignmentFlag.AlignCenter)
                label.setStyleSheet("font-weight: 600; border-bottom: 2px solid #4a4f58; padding: 2px 0 4px 0;")
                label.setToolTip(_group_tip(trigger, trigger_word))
                self._grid.addWidget(label, header_row, first, 1, span)
            header_row += 1
        for column, place in places.items():
            trigger, strength = column
            text = "" if strength is None else f"Strength {format_strength(strength)}"
            label = QLabel(text, self)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setObjectName("muted")
            self._grid.addWidget(label, header_row, place)
            self._column_labels.append(f"{group_title(trigger, trigger_word)} · {text}" if show_groups else text)
        header_row += 1

        for r, step in enumerate(rows):
            grid_row = header_row + r
            label = QLabel(self)
            label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            label.setMinimumWidth(84)
            self._row_labels[step] = label
            self._grid.addWidget(label, grid_row, 0)
            if step == 0:
                for trigger, (first, span) in spans.items():
                    self._add_cell((prompt_index, 0, trigger, 0.0), grid_row, first, span, waiting)
            else:
                for (trigger, strength), place in places.items():
                    if strength is not None:
                        self._add_cell((prompt_index, step, trigger, strength), grid_row, place, 1, waiting)
        self._grid.setRowStretch(header_row + len(rows), 1)
        self._restyle_selection()

    def _add_cell(self, key: CellKey, row: int, col: int, span: int, waiting: bool) -> None:
        cell = _Cell(key, self._thumb_size, self)
        cell.set_pending(waiting)
        cell.clicked.connect(lambda _=False, c=cell: c.cell is not None and self.clicked.emit(c.cell))
        self._cells[key] = cell
        self._grid.addWidget(cell, row, col, 1, span, Qt.AlignmentFlag.AlignCenter)

    # --- content ------------------------------------------------------------------------------------

    def set_cell(self, cell: ev.CompareCell) -> _Cell | None:
        widget = self._cells.get(cell_key(cell))
        if widget is not None:
            widget.set_cell(cell)
        return widget

    def set_image(self, path: str, image: QImage) -> None:
        for widget in self._cells.values():
            if widget.cell is not None and widget.cell.path == path:
                widget.set_image(image)

    def set_waiting(self, waiting: bool) -> None:
        for widget in self._cells.values():
            if widget.cell is None:
                widget.set_pending(waiting)

    def select(self, key: CellKey | None) -> None:
        self._selected_key = key
        self._selected_step = key[1] if key is not None else None
        self._restyle_selection()

    def set_recommended(self, step: int | None) -> None:
        self._recommended = step
        self._restyle_selection()

    def _restyle_selection(self) -> None:
        for step, label in self._row_labels.items():
            chosen, recommended = step == self._selected_step, bool(step) and step == self._recommended
            title = "Base model" if step == 0 else f"{'★ ' if recommended else ''}Step {step:,}"
            note = "no LoRA" if step == 0 else " · ".join(w for w, on in (("recommended", recommended), ("chosen", chosen)) if on)
            colour = _HIGHLIGHT if chosen else "#9aa0a8"
            label.setText(f"<b>{title}</b>" + (f"<br><span style='color:{colour}'>{note}</span>" if note else ""))
        for key, widget in self._cells.items():
            widget.set_selected(key[1] == self._selected_step, key == self._selected_key)

    # --- for tests and the dialog -------------------------------------------------------------------

    def row_labels(self) -> list[str]:
        return ["Base model" if s == 0 else f"Step {s:,}" for s in self._row_labels]

    def row_header(self, step: int) -> str:
        """A row's header as shown (rich text: title, then its note)."""
        return self._row_labels[step].text()

    def column_labels(self) -> list[str]:
        return list(self._column_labels)

    def cell_widget(self, key: CellKey) -> _Cell | None:
        return self._cells.get(key)

    def cell_widgets(self) -> list[_Cell]:
        return list(self._cells.values())

    def filled_count(self) -> int:
        return sum(w.cell is not None for w in self._cells.values())

    def loaded_count(self) -> int:
        return sum(w.loaded for w in self._cells.values())


def group_title(trigger: bool, word: str) -> str:
    if word:
        return f"With “{word}”" if trigger else f"Without “{word}”"
    return "Prompt as written" if trigger else "Without the trigger word"


def _group_tip(trigger: bool, word: str) -> str:
    if trigger:
        return "The prompts as written, with the trigger word: how the LoRA looks when it is called."
    return ("The same prompts without the trigger word: a style that shows here bleeds into every prompt "
            "(try a lower strength or an earlier step).")
