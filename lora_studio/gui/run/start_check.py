"""Whether Start may make a run: what the ready line already knows would fail refuses it before a run
folder exists, so the artist reads the reason at once instead of a "Failed" run 10 s later (the engine
would stop on the same problem after loading), and the history keeps only runs that trained."""

from __future__ import annotations

from typing import Any

from lora_studio.core.errors import Problem, UserError
from lora_studio.gui.settings.places import say_problem


def first_problem(problems: list[Problem]) -> str:
    """The first of the settings' problems as a sentence, and how many more there are: the ready line's
    words and Start's refusal are the same."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return say_problem(problems[0]) + more


def refusal(problems: list[Problem], trainable_images: list[Any] | None) -> UserError | None:
    """Why Start must not make a run (None when it may). `problems` are the settings' (the store's: config
    validation and the model files' headers); `trainable_images` the grid's included, openable images, or
    None while the dataset is still being read (the engine then checks it)."""
    if problems:
        return UserError(f"Not started: {first_problem(problems)}",
                         hint="Fix it in the Settings tab, then press Start again.", code="not_ready")
    if trainable_images is not None and not trainable_images:
        return UserError("Not started: no image in the dataset can train (each one is left out or cannot be opened).",
                         hint="Add images in the Dataset tab, or include some again.", code="no_trainable_images")
    return None
