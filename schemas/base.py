"""What every config model shares: strictness (unknown keys are errors) and the fatal error types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# Which part of a record a text-level stage looks at: everything, everything but system turns,
# only the user turns, or only the answers (assistant turns, and `chosen` for preference rows).
# Raw text is the same in all.
TextView = Literal["all", "no_system", "user", "assistant"]


class ConfigError(Exception):
    """A fatal, user-facing problem with the config or its inputs (exit code 2, no traceback)."""


class StageFailed(Exception):
    """A stage could not do its job (judges unreachable, too many records left unscored): the run
    stops with this message and nothing is published (exit code 4, no traceback)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
