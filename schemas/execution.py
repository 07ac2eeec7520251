"""Where a run's per-partition work executes: this process (local) or a Ray cluster (ray)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from schemas.base import Strict


class ExecutionConfig(Strict):
    engine: Literal["local", "ray"] = Field("local", description="local: this process; ray: tasks on a Ray cluster.")
    address: str | None = Field(
        None,
        description="Ray cluster: 'auto', 'HOST:PORT' or 'ray://HOST:10001'; null = start a local Ray instance.",
    )
    batch_size: int = Field(
        10_000,
        ge=1,
        description="Records per corpus shard: what a stage holds in memory at a time, and one Ray task's partition.",
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance (address: null); null = all.")
    min_kept: int = Field(
        1, ge=0, description="A run that keeps fewer records fails (exit 4); a scheduled refresh may want more, or 0."
    )
    max_ingest_rejected: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A run stops (exit 4) right after ingest when an input file loses more than this share"
        " of its rows to ingest errors (1 = never).",
    )

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and not re.fullmatch(r"(ray://)?[^:\s/]+:\d+", value):
            raise ValueError(f"expected 'auto', 'HOST:PORT' or 'ray://HOST:PORT', got {value!r}")
        return value
