"""What a comparison holds, apart from any widget: the plan Generate asked for and the images made (or read
back from its grid file), and the shape of one prompt's grid that follows from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from lora_studio.core import events as ev
from lora_studio.gui.compare.grid import CellKey, Column, Plan, cell_key


@dataclass
class CompareResults:
    plan: Plan | None = None
    cells: dict[CellKey, ev.CompareCell] = field(default_factory=dict)
    made: int = 0  # images the running (or last) comparison made; a saved grid's do not count

    def start(self, plan: Plan) -> None:
        self.plan = plan
        self.cells.clear()
        self.made = 0

    def load(self, cells: list[ev.CompareCell]) -> None:
        for cell in cells:
            self.cells[cell_key(cell)] = cell

    def add(self, cell: ev.CompareCell) -> CellKey:
        key = cell_key(cell)
        if key not in self.cells:
            self.made += 1
        self.cells[key] = cell  # the same cell made again replaces the first
        return key

    def total(self) -> int:
        return self.plan.total() if self.plan else 0

    def made_text(self) -> str:
        """'3 of 20 images', or only the count when the engine made more than planned."""
        total = self.total()
        return f"{self.made} of {total} images" if total >= self.made else images_text(self.made)

    def rows_and_columns(self, prompt: int) -> tuple[list[int], list[Column]]:
        """Rows: every checkpoint asked for or shown. Columns: this prompt's trigger states (a prompt without
        the trigger word as a tag has no without-variant) times every strength."""
        plan = self.plan
        rows = set(plan.steps) if plan else set()
        strengths = set(plan.strengths) if plan else set()
        triggers = set(plan.prompt_triggers(prompt)) if plan else set()
        for p, step, trigger, strength in self.cells:
            if step:
                rows.add(step)
                strengths.add(strength)
            if p == prompt:
                triggers.add(trigger)
        if not rows and not self.cells:
            return [], []
        triggers = triggers or {True}
        columns: list[Column] = [(t, s) for t in sorted(triggers, reverse=True) for s in sorted(strengths)]
        # a group with only base-model images still needs a column to sit in
        columns += [(t, None) for t in sorted(triggers, reverse=True) if not strengths]
        return [0, *sorted(rows)], columns

    def prompt_titles(self) -> list[str]:
        """A title per prompt: the prompt as the engine wrote it (with the trigger word), else as planned."""
        planned = self.plan.prompts if self.plan else ()
        count = max([len(planned), *(k[0] + 1 for k in self.cells)])
        titles = []
        for i in range(count):
            cells = sorted((c for k, c in self.cells.items() if k[0] == i), key=lambda c: not c.trigger)
            if cells and cells[0].prompt:
                titles.append(cells[0].prompt)
            elif i < len(planned):
                titles.append(planned[i])
            else:
                titles.append(f"Prompt {i + 1}")
        return titles

    def prompt_seeds(self, prompt: int) -> set[int]:
        return {c.seed for k, c in self.cells.items() if k[0] == prompt}

    def prompt_cells(self, prompt: int) -> list[ev.CompareCell]:
        return [c for k, c in self.cells.items() if k[0] == prompt]


def images_text(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")
