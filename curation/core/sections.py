"""Every section of a run config, in the order its work happens, and what each writes in RUN_DIR.

The plan's steps (curation/core/plan.py builds them) come first, then what the flow does with
the run directory. A new stage is its package, its line here and its lines in build_plan; the
CLI's help and `curate validate`, the cleanup of a rerun's stale outputs and the tests read this
list. Kept free of the stages' imports so the CLI can read it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.config import CurateConfig


@dataclass(frozen=True)
class Section:
    """`outputs`: what it writes in RUN_DIR besides the records (removed when a rerun into that
    RUN_DIR lacks the section); `step`: its work is a step of the plan (else the flow's)."""

    name: str
    outputs: tuple[str, ...] = ()
    step: bool = True


SECTIONS = (
    Section("pii"),
    Section("synthesis", ("synthesis",)),
    Section("filters"),
    Section("decontamination", ("decontamination",)),
    Section("dedup"),
    Section("jury", ("jury",)),
    Section("preference"),
    Section("select"),
    Section("export", ("export",)),
    Section("validation", ("validation",), step=False),
    Section("publish", ("publish.json",), step=False),
    Section("train", step=False),
)

# The curation's steps for the CLI's help: "ingest -> pii -> synthesis -> ... -> export".
STEPS_LINE = " -> ".join(["ingest", *(s.name for s in SECTIONS if s.step)])


def configured(config: CurateConfig) -> list[str]:
    """The names of the sections `config` has, in the order their work happens."""
    return [section.name for section in SECTIONS if getattr(config, section.name) is not None]
