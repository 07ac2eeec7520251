"""Ingest: every input file and shape becomes rows of RECORD_SCHEMA, or rows of REJECT_SCHEMA.

A reader turns a file (gzip, zstd or bz2 compressed or not) into input rows (a parsed JSON value,
its source and raw bytes); a shape, detected per file from the first JSON object (and per row for
a row that shape does not fit: a mixed file), turns a row into record drafts; `Record`
validates each draft. Nothing malformed raises: it becomes a reject with a named reason, so
every input row is accounted for.

Given a directory, ingest streams: records and rejects go to parquet shards (curation/core/corpus.py)
every `batch_size` rows, and JSON Lines and parquet inputs are read a line / row group at a time,
so memory does not grow with the corpus (only the set of ids given out does).

The modules, one job each: `readers` (a file -> input rows), `shapes` (an input row -> record
drafts), `collect` (the run: drafts -> validated records and rejects, with unique ids).
"""

from curation.ingest.collect import SAMPLE_ROWS, STAGE, FileReport, IngestResult, check_inputs, ingest, skipped_files
from curation.ingest.readers import detect_format

__all__ = ["SAMPLE_ROWS", "STAGE", "FileReport", "IngestResult", "check_inputs", "detect_format", "ingest", "skipped_files"]
