"""Every section of a run config, in the order its work happens, and what each writes in RUN_DIR.

The sections of the plan's steps come first, derived from the plan's one list of steps
(curation/core/plan.py STEPS: a section is configured when one of its steps runs, its outputs are
its steps'), then those of what the flow does with the run directory, listed here and nowhere
else. The CLI's help and `curate validate`, the cleanup of a rerun's stale outputs and the tests
read them. Read at call time, so a step added to STEPS (a test's) is listed too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from curation.core import plan
from schemas.config import CurateConfig


@dataclass(frozen=True)
class Section:
    """`outputs`: what it writes in RUN_DIR besides the records (removed when a rerun into that
    RUN_DIR lacks the section); `step`: its work is a step of the plan (else the flow's);
    `present`: whether a config has it."""

    name: str
    outputs: tuple[str, ...]
    step: bool
    present: Callable[[CurateConfig], bool]


def _flow(name: str, outputs: tuple[str, ...] = ()) -> Section:
    return Section(name, outputs, False, lambda config: getattr(config, name) is not None)


# What the flow does with the run directory once the plan has run.
FLOW_SECTIONS = (_flow("validation", ("validation",)), _flow("publish", ("publish.json",)), _flow("train"))


def _step_section(name: str) -> Section:
    specs = [spec for spec in plan.STEPS if spec.section == name]

    def present(config: CurateConfig) -> bool:  # no step is built: the context only answers `when`
        return any(spec.runs(plan.PlanContext(config, Path())) for spec in specs)

    return Section(name, tuple(o for spec in specs for o in spec.outputs), True, present)


def sections() -> list[Section]:
    """Every section, in the order its work happens: the plan's, then the flow's."""
    return [_step_section(name) for name in dict.fromkeys(spec.section for spec in plan.STEPS)] + list(FLOW_SECTIONS)


def steps_line() -> str:
    """The curation's steps for the CLI's help: "ingest -> pii -> synthesis -> ... -> export"."""
    return " -> ".join(["ingest", *(s.name for s in sections() if s.step)])


def configured(config: CurateConfig) -> list[str]:
    """The names of the sections `config` has, in the order their work happens."""
    return [section.name for section in sections() if section.present(config)]
