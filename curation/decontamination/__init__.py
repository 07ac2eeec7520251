"""Benchmark decontamination: records that contain (or rephrase) benchmark test items are removed.

`index` reads the benchmark files with ingest and indexes their texts' word n-grams (cached by
file hash); `ngrams` normalises and hashes; `stage` checks records against the index (and, with
`semantic`, against the benchmark texts' embeddings).
"""

from curation.decontamination.stage import build_decontamination_stage

__all__ = ["build_decontamination_stage"]
