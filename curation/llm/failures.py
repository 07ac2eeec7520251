"""The fail-closed rule of the LLM stages: past a configured share of failed items the stage
stops the run (StageFailed) with one message naming who failed and how, instead of letting
unscored records through a quality gate that did not run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from schemas.base import StageFailed


def check_failures(
    what: str, failed: int, total: int, max_share: float, option: str, causes: Mapping[str, Counter[str]]
) -> None:
    """Raise StageFailed when `failed` of `total` items is more than `max_share` (the config
    option `option`); `causes` names who failed (a judge, a generator) and how often by kind."""
    if total == 0 or failed / total <= max_share:
        return
    named = "; ".join(
        f"{who}: " + ", ".join(f"{kind} x{n}" for kind, n in counts.most_common())
        for who, counts in causes.items()
        if counts
    )
    raise StageFailed(
        f"{what}: {failed} of {total} ({failed / total:.0%}) failed, more than {option} = {max_share:g} allows"
        + (f" - {named}" if named else "")
        + ". Nothing was published; fix the cause and rerun (answers received so far are reused from the cache)."
    )
