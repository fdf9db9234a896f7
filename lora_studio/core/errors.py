"""Errors an artist can fix, each with a code, a one-sentence message and a hint."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    key: str  # the config key (or "config" for the file itself)
    message: str  # what is wrong and how to fix it, continuing the key: "train.rank is 0; ..."

    def __str__(self) -> str:
        return f"{self.key} {self.message}"


class UserError(Exception):
    """A mistake the artist can fix: reported as an `error` event, never as a traceback."""

    code = "user_error"

    def __init__(self, message: str, hint: str = "", code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code:
            self.code = code

    def for_terminal(self) -> str:
        """How a headless user reads it on stderr (the CLI keeps config keys in its words)."""
        return f"error: {self.message}" + (f"\nhint: {self.hint}" if self.hint else "")


class ConfigError(UserError):
    code = "bad_config"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "; ".join(str(p) for p in problems)
        n = len(problems)
        super().__init__(
            f"The settings have {n} problem{'s' if n != 1 else ''}: {lines}",
            hint="Fix the settings named above and start again.",
        )
