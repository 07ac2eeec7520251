"""What every config model shares: strictness (unknown keys are errors) and the fatal error type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """A fatal, user-facing problem with the config or its inputs (exit code 2, no traceback)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
