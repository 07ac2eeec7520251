"""Dedup stages: exact (normalised hash), near (MinHash LSH) and semantic (embeddings).

Each stage keeps the earliest record of every duplicate cluster (row order of its input) and
rejects the others with `duplicate_of` naming the kept record's id.
"""

from curation.dedup.exact import build_exact_stage
from curation.dedup.minhash import build_minhash_stage
from curation.dedup.semantic import build_semantic_stage

__all__ = ["build_exact_stage", "build_minhash_stage", "build_semantic_stage"]
