"""The filter stage: datatrove-style quality checks, vectorised with polars.

A check is a reason, a boolean "drop" expression and a detail expression. The stage adds the
helper columns the configured sections need (text views, counts, per-turn figures), then labels
each record with the first failing check, in config order: placeholders, length, keywords, format, truncated,
repetition, language.
Details are computed only for the removed records. Python runs per text only where polars
cannot: the tokenizer (one batch call) and json.loads / ast.parse on the few answers that hold
JSON or fenced python code.

`stage` builds the stage from the sections in `placeholders`, `length`, `keywords`, `format`,
`truncated`, `repetition` and `language`;
`checks` holds what they share.
"""

from curation.filters.keywords import REFUSAL_PHRASES, PhraseMatcher, read_phrases
from curation.filters.stage import PARALLEL_MIN_ROWS, build_filter_stage

__all__ = ["PARALLEL_MIN_ROWS", "REFUSAL_PHRASES", "PhraseMatcher", "build_filter_stage", "read_phrases"]
