"""A data ablation's summary: the variants (the same training on variants of the data, each a
candidate of training.candidates trained into train/ablation/<variant>/) compared on the same
held-out rows, the best by the first of train.select_by, and whether it differs from the
reference variant beyond noise. Every variant is evaluated on the same rows, so its held-out
loss and its error rates are compared with the reference's row by row: a paired bootstrap
(seeded by ablation.seed) gives each difference a 95% interval, and one that includes 0 is
within noise. The jury's win-rates against the base carry their own 95% intervals.

A variant trains only when no training of the run had its data and settings: a variant on the
exported set's rows (the same digest) with the candidate's settings takes the candidate's result,
and a variant whose data equals an earlier variant's takes that one's, so the ablation costs the
trainings that differ and no more."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from schemas.train import TrainConfig
from schemas.train_result import AblationSummary, CandidateResult, Difference, VariantData, VariantResult
from training.candidates import fingerprint
from training.leaderboard import rank

SUMMARY = "summary.json"
RESAMPLES = 1000  # bootstrap resamples per interval: its 2.5% and 97.5% points move by ~0.01 sd


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
    versus = {name: differences(results[name], results[reference], train.ablation.seed) for name in results}
    summary = AblationSummary(
        metric=metric,
        reference=reference,
        best=best,
        verdict=verdict(results, versus, best, reference, metric),
        held_out_ids=held_out_ids,
        variants={
            name: VariantResult(
                data=data[name], result=results[name], versus=versus[name], reused=(reused or {}).get(name)
            )
            for name in results
        },
    )
    summary.write(run_dir / "train" / "ablation" / SUMMARY)
    return summary


def paired_bootstrap(ours: Sequence[float], theirs: Sequence[float], seed: int) -> Difference:
    """The mean of ours less theirs, row by row, with the 95% percentile interval of RESAMPLES
    resamples of the rows (the same rows drawn for both sides: the pairing removes what the
    rows themselves vary by)."""
    diffs = np.asarray(ours, dtype=float) - np.asarray(theirs, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(diffs), size=(RESAMPLES, len(diffs)))
    low, high = (float(x) for x in np.percentile(diffs[draws].mean(axis=1), [2.5, 97.5]))
    return Difference(difference=float(diffs.mean()), ci95=[low, high], rows=len(diffs), within_noise=low <= 0 <= high)


def differences(ours: CandidateResult, theirs: CandidateResult, seed: int) -> dict[str, Difference]:
    """`ours` against `theirs` on the same rows: the held-out loss, and the tuned answers' rate of
    each error category (an answer in it counts 1). A figure either side lacks row by row (an
    older result, no error analysis) or whose rows do not pair up is left out."""
    found: dict[str, Difference] = {}
    if ours.row_losses and theirs.row_losses and len(ours.row_losses) == len(theirs.row_losses):
        found["eval_loss"] = paired_bootstrap(ours.row_losses, theirs.row_losses, seed)
    flags = [(r.errors or {}).get("tuned", {}).get("flags") or [] for r in (ours, theirs)]
    if ours.errors and flags[0] and flags[1] and len(flags[0]) == len(flags[1]):
        for category in ours.errors["categories"]:
            side = [[float(category in answer) for answer in f] for f in flags]
            found[category] = paired_bootstrap(side[0], side[1], seed)
    return found


def verdict(
    results: Mapping[str, CandidateResult],
    versus: Mapping[str, Mapping[str, Difference]],
    best: str,
    reference: str,
    metric: str,
) -> str:
    """One sentence: the best variant, and whether its difference to the reference is beyond
    noise: by the paired interval of the metric's difference when it has one (eval_loss), else
    by the two win-rate intervals (apart or overlapping)."""
    value = results[best].metrics.model_dump()[metric]
    head = f"{best} is best by {metric} ({value:.4g})" if value is not None else f"{best} is first by {metric} (not measured)"
    if best == reference:
        return f"{head}: the reference variant itself; no variant did better."
    if (paired := versus[best].get(metric)) is not None:
        against = (
            f"{metric} {paired.difference:+.4g} against {reference}, 95% interval {_ci(paired.ci95)}"
            f" over {paired.rows} paired rows"
        )
        if paired.within_noise:
            return f"{head}, but within noise: {against} includes 0."
        return f"{head}: {against} excludes 0: a real difference."
    ours, theirs = (results[n].win_rate and results[n].win_rate.get("ci95") for n in (best, reference))  # type: ignore[union-attr]
    if not ours or not theirs:
        return f"{head}, against {reference}: no interval to tell it from noise (a `jury:` section gives win-rate intervals)."
    if ours[0] > theirs[1] or ours[1] < theirs[0]:
        return f"{head}: its win-rate interval {_ci(ours)} is clear of {reference}'s {_ci(theirs)}: a real difference."
    return f"{head}, but within noise against {reference}: win-rate intervals {_ci(ours)} and {_ci(theirs)} overlap."


def _ci(interval: list[float]) -> str:
    return f"[{interval[0]:.3g}, {interval[1]:.3g}]"
