"""A data ablation's summary: the variants (the same training on variants of the data, each a
candidate of training.candidates trained into train/ablation/<variant>/) compared on the same
held-out rows, the best by the first of train.select_by, and whether it differs from the
reference variant beyond noise: the jury's win-rates against the base, with their 95%
intervals, are the only figures with an interval, so without a jury nothing is called a
difference.

A variant trains only when no training of the run had its data and settings: a variant on the
exported set's rows (the same digest) with the candidate's settings takes the candidate's result,
and a variant whose data equals an earlier variant's takes that one's, so the ablation costs the
trainings that differ and no more."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from schemas.train import TrainConfig
from schemas.train_result import AblationSummary, CandidateResult, VariantData, VariantResult
from training.candidates import fingerprint
from training.leaderboard import rank

SUMMARY = "summary.json"


def train_variants(
    train: TrainConfig,
    data: Mapping[str, VariantData],
    candidate: tuple[str, CandidateResult, str],
    train_one: Callable[[str, VariantData], CandidateResult],
) -> tuple[dict[str, CandidateResult], dict[str, str]]:
    """Each variant's result, by `train_one` or reused: `candidate` is the first candidate's name,
    result and data digest (the exported set's). Also which variants reused which training."""
    name, result, digest = candidate
    done: dict[str, tuple[str, CandidateResult]] = {}
    if result.fingerprint == fingerprint(train.ablation_config()):  # the variants' settings are its own
        done[digest] = (f"candidate {name}", result)
    results: dict[str, CandidateResult] = {}
    reused: dict[str, str] = {}
    for variant, variant_data in data.items():
        if variant_data.digest in done:
            reused[variant], results[variant] = done[variant_data.digest]
        else:
            results[variant] = train_one(variant, variant_data)
            done[variant_data.digest] = (f"variant {variant}", results[variant])
    return results, reused


def summarize_ablation(
    train: TrainConfig,
    run_dir: Path,
    data: Mapping[str, VariantData],
    results: Mapping[str, CandidateResult],
    held_out_ids: list[str],
    reused: Mapping[str, str] | None = None,
) -> AblationSummary:
    """train/ablation/summary.json from the variants' data and results."""
    assert train.ablation is not None
    metric = train.select_by[0]
    best = rank({name: r.metrics.model_dump() for name, r in results.items()}, [metric])[0]
    reference = train.ablation.reference()
    summary = AblationSummary(
        metric=metric,
        reference=reference,
        best=best,
        verdict=verdict(results, best, reference, metric),
        held_out_ids=held_out_ids,
        variants={
            name: VariantResult(data=data[name], result=results[name], reused=(reused or {}).get(name)) for name in results
        },
    )
    summary.write(run_dir / "train" / "ablation" / SUMMARY)
    return summary


def verdict(results: Mapping[str, CandidateResult], best: str, reference: str, metric: str) -> str:
    """One sentence: the best variant, and whether its difference to the reference is beyond
    noise (their win-rate intervals apart) or within it."""
    value = results[best].metrics.model_dump()[metric]
    head = f"{best} is best by {metric} ({value:.4g})" if value is not None else f"{best} is first by {metric} (not measured)"
    if best == reference:
        return f"{head}: the reference variant itself; no variant did better."
    ours, theirs = (results[n].win_rate and results[n].win_rate.get("ci95") for n in (best, reference))  # type: ignore[union-attr]
    if not ours or not theirs:
        return f"{head}, against {reference}: no interval to tell it from noise (a `jury:` section gives win-rate intervals)."
    if ours[0] > theirs[1] or ours[1] < theirs[0]:
        return f"{head}: its win-rate interval {_ci(ours)} is clear of {reference}'s {_ci(theirs)}: a real difference."
    return f"{head}, but within noise against {reference}: win-rate intervals {_ci(ours)} and {_ci(theirs)} overlap."


def _ci(interval: list[float]) -> str:
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]"
