"""Preference pairs built with and without dedup on oasst trees (issue 23).

    .venv/bin/python -m bench.bench_preference_dedup [--input ../shared/data/sft/oasst_en_100_tree.jsonl]

Two runs of run_pipeline on the same input and preference section (ranking: human, the oasst
ranks; no jury): one without dedup, one with exact + MinHash + semantic (view: assistant,
threshold 0.9, as in configs/demo.yaml). Prints the pairs each builds and, for the dedup run,
the records each dedup stage removed and the sibling answers it protected.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from curation.core.inputs import load_config
from curation.core.run import run_pipeline
from schemas.figures import DEDUP_FIGURES, PreferenceFigures

DEDUP = {"exact": {}, "minhash": {"threshold": 0.8, "num_perm": 128, "ngram": 5},
         "semantic": {"threshold": 0.9, "view": "assistant"}}


def pairs(input_path: Path, dedup: bool, work: Path) -> tuple[int, dict[str, tuple[int, int, int | None]]]:
    """Preference pairs built, and per dedup stage (records in, removed, siblings_protected)."""
    config = {"inputs": [{"path": str(input_path.resolve())}], "preference": {"ranking": "human"}}
    if dedup:
        config["dedup"] = DEDUP
    name = "dedup" if dedup else "plain"
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    stats = run_pipeline(load_config(path), work / name, path)
    stages = {s.stage: (s.rows_in, s.removed, s.figures.siblings_protected)
              for s in stats.stages if isinstance(s.figures, DEDUP_FIGURES)}
    preference = stats.figures(PreferenceFigures)
    if preference is None:
        raise SystemExit("the run has no preference stage")
    return preference.generated, stages


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", type=Path, default=Path("../shared/data/sft/oasst_en_100_tree.jsonl"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, _ = pairs(args.input, False, Path(tmp))
        deduped, stages = pairs(args.input, True, Path(tmp))
    print(f"pairs without dedup: {plain}; with exact + minhash + semantic: {deduped} ({deduped / plain:.0%})")
    for stage, (rows_in, removed, protected) in stages.items():
        print(f"  {stage}: {rows_in} in, removed {removed}, siblings protected {protected}")


if __name__ == "__main__":
    main()
