"""Errors an artist can fix, each with a code, a one-sentence message and a hint.

A message names the settings it is about as {section.key} placeholders ("lower {dataset.min_bucket_side}
or raise {train.resolution}"): `spell` writes them as the keys for the CLI and the event stream, and the
app writes them as the labels on screen (gui/settings/places.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

KEY_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[a-z0-9_]+)+)\}")


def spell(text: str, name: Callable[[str], str] = str) -> str:
    """text with each {section.key} written as name(key): the key itself unless told otherwise."""
    return KEY_PLACEHOLDER.sub(lambda m: name(m.group(1)), text)


@dataclass(frozen=True)
class Problem:
    key: str  # the config key (or "config" for the file itself)
    message: str  # what is wrong and how to fix it, continuing the key: "is 0; ..." ({section.key} for others)

    def __str__(self) -> str:
        return self.spelled()

    def spelled(self, name: Callable[[str], str] = str) -> str:
        """The whole sentence, the problem's own key and the ones it mentions written as name(key)."""
        return f"{name(self.key)} {spell(self.message, name)}"


class UserError(Exception):
    """A mistake the artist can fix: reported as an `error` event, never as a traceback."""

    code = "user_error"

    def __init__(self, message: str, hint: str = "", code: str | None = None):
        # The templates keep the {section.key} placeholders for the app; message and hint name the keys.
        self.template, self.hint_template = message, hint
        self.message, self.hint = spell(message), spell(hint)
        super().__init__(self.message)
        if code:
            self.code = code

    def for_terminal(self) -> str:
        """How a headless user reads it on stderr (the CLI keeps config keys in its words)."""
        return f"error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")


class ConfigError(UserError):
    code = "bad_config"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        # A problem's own key becomes a placeholder too ("config" and "train.x[0]" stay as they are).
        lines = "; ".join(f"{{{p.key}}} {p.message}" if KEY_PLACEHOLDER.fullmatch(f"{{{p.key}}}") else str(p) for p in problems)
        n = len(problems)
        super().__init__(
            f"The settings have {n} problem{'s' if n != 1 else ''}: {lines}",
            hint="Fix the settings named above and start again.",
        )
