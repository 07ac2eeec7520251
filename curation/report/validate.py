"""Validation: Great Expectations suites run on the exported sets, with Data Docs and a summary.

For each suite of `validation.suites` (sft, preference), the run's kept records of that kind
(`RUN_DIR/kept.parquet`: what export wrote out) become a pandas frame at the GX boundary, with
the derived columns the suite files (`schemas/gx_suites/<name>.json`) expect:

    sft         id, messages, roles_alternate, answer_min_words, answer_max_chars, jury_score,
                text_hash
    preference  id, prompt, chosen, rejected, roles_alternate, answer_min_words,
                answer_max_chars, chosen_score, rejected_score, text_hash

Conversations are shown as "role: content" lines (null when there are no turns). GX runs in an
ephemeral context (in-memory stores, no project folder, no network) and writes:

    RUN_DIR/validation/data_docs/   Data Docs HTML (index.html lists every suite's result)
    RUN_DIR/validation/summary.json per suite: severity, success, expectations run, failures

`enforce(summary)` raises ValidationFailed when a `fail`-severity suite failed. GX is imported
inside the functions: it takes seconds to import and only this stage needs it.
"""

from __future__ import annotations

import html
import math
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from schemas.validation import SUITES_DIR, SuiteName, ValidationConfig

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

OUT_DIR = "validation"
DOCS_INDEX = f"{OUT_DIR}/data_docs/index.html"  # as summary.json names it: relative to RUN_DIR
HASH_SEED = 0x5EED

# Role sequences, joined by commas, that export accepts (curation.export.checks.conversation_problem):
# an optional system turn, then user and assistant alternate; a tool result may take the user's
# place after an answer. A conversation ends with an answer, a preference prompt with a user turn.
_CONVERSATION = r"^(system,)?user(,assistant,(user|tool))*,assistant$"
_PROMPT = r"^(system,)?(user,assistant,((user|tool),assistant,)*)?user$"
# Summary format: the first 20 offending values, and the ids of their rows.
_RESULT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["id"]}
_SHOWN = 5  # ids and values quoted per failed expectation


class ValidationFailed(Exception):
    """A `fail`-severity suite failed; the message names each suite and failed expectation."""

    def __init__(self, message: str, suites: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.suites = suites


# --- the frames GX checks ------------------------------------------------------------------


def _turns_text(column: str) -> pl.Expr:
    """The turns as "role: content" lines; null when the record has none."""
    turns = pl.col(column)
    turn = pl.element().struct
    lines = turns.list.eval(
        pl.concat_str(turn.field("role"), pl.lit(": "), turn.field("content").fill_null(""))
    ).list.join("\n")
    return pl.when(turns.list.len() > 0).then(lines)


def _roles(column: str) -> pl.Expr:
    return pl.col(column).list.eval(pl.element().struct.field("role")).list.join(",")


def _answer_lengths(answers: pl.Expr) -> list[pl.Expr]:
    """Words of the shortest answer and characters of the longest (bounds hold for every answer)."""
    return [
        answers.list.eval(pl.element().str.count_matches(r"\S+")).list.min().alias("answer_min_words"),
        answers.list.eval(pl.element().str.len_chars()).list.max().alias("answer_max_chars"),
    ]


def _score(path: str) -> pl.Expr:
    return pl.col("meta").str.json_path_match(path).cast(pl.Float64, strict=True)


def _text_hash(columns: list[str]) -> pl.Expr:
    """Hash of the record's text, lowercased with whitespace collapsed; a string, because pandas
    turns a nullable uint64 into float64 and would merge distinct hashes."""
    text = (
        pl.concat_str([pl.col(c) for c in columns], separator="\n", ignore_nulls=True)
        .str.to_lowercase()
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )
    return pl.when(text != "").then(text.hash(HASH_SEED).cast(pl.String)).alias("text_hash")


def suite_frame(records: pl.DataFrame, kind: SuiteName) -> pl.DataFrame:
    """The columns suite `kind` checks, one row per record of that kind (RECORD_SCHEMA input)."""
    rows = records.filter(pl.col("kind") == kind)
    if kind == "sft":
        assistant = pl.element().struct.field("role") == "assistant"
        answers = pl.col("messages").list.eval(pl.element().filter(assistant).struct.field("content"))
        return rows.select(
            "id",
            _turns_text("messages").alias("messages"),
            _roles("messages").str.contains(_CONVERSATION).fill_null(False).alias("roles_alternate"),
            *_answer_lengths(answers),
            _score("$.jury.score").alias("jury_score"),
        ).with_columns(_text_hash(["messages"]))
    prompt = _roles("messages")
    alternate = (
        prompt.str.contains(_PROMPT)
        & pl.concat_str(prompt, _roles("chosen"), separator=",").str.contains(_CONVERSATION)
        & pl.concat_str(prompt, _roles("rejected"), separator=",").str.contains(_CONVERSATION)
    )
    answers = pl.concat_list("chosen", "rejected").list.eval(pl.element().struct.field("content"))
    return rows.select(
        "id",
        _turns_text("messages").alias("prompt"),
        _turns_text("chosen").alias("chosen"),
        _turns_text("rejected").alias("rejected"),
        alternate.fill_null(False).alias("roles_alternate"),
        *_answer_lengths(answers),
        _score("$.preference.chosen.score").alias("chosen_score"),
        _score("$.preference.rejected.score").alias("rejected_score"),
    ).with_columns(_text_hash(["prompt", "chosen", "rejected"]))


# --- suites ---------------------------------------------------------------------------------


def _parameters_of(value: Any) -> set[str]:
    """Names of the `{"$PARAMETER": name}` placeholders anywhere in an expectation's kwargs."""
    if isinstance(value, dict):
        if "$PARAMETER" in value:
            return {value["$PARAMETER"]}
        return set().union(*(_parameters_of(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_parameters_of(v) for v in value))
    return set()


def suite_spec(name: SuiteName, cfg: ValidationConfig) -> dict[str, Any]:
    """The suite file's JSON without the expectations whose bounds the config leaves unset."""
    path = SUITES_DIR / f"{name}.json"
    spec = orjson.loads(path.read_bytes())
    params = cfg.parameters()
    kept = []
    for expectation in spec["expectations"]:
        used = _parameters_of(expectation.get("kwargs", {}))
        unknown = used - params.keys()
        if unknown:
            raise ValueError(f"{path}: unknown $PARAMETER {', '.join(sorted(unknown))}")
        if all(params[p] is not None for p in used):
            kept.append(expectation)
    return {**spec, "expectations": kept}


# --- running GX -----------------------------------------------------------------------------


def _context(docs_dir: Path) -> Any:
    """An in-memory GX context whose one Data Docs site is `docs_dir`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),  # no tqdm bars in flow logs
        data_docs_sites={
            "run": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _run_suites(
    frames: dict[SuiteName, pl.DataFrame], cfg: ValidationConfig, docs_dir: Path, run_name: str
) -> dict[SuiteName, ExpectationSuiteValidationResult]:
    """Validate each frame with its suite, then build the Data Docs site (also when none ran)."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(docs_dir)
    source = context.data_sources.add_pandas("kept")
    params = {k: v for k, v in cfg.parameters().items() if v is not None}
    results = {}
    for name, frame in frames.items():
        spec = suite_spec(name, cfg)
        suite = gx.ExpectationSuite(**spec)
        if len(suite.expectations) != len(spec["expectations"]):  # GX only logs the ones it rejects
            raise ValueError(f"{SUITES_DIR / f'{name}.json'}: an expectation is not valid GX configuration")
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=context.suites.add(suite))
        )
        results[name] = definition.run(
            batch_parameters={"dataframe": frame.to_pandas()},  # GX has no polars support
            expectation_parameters=params,
            result_format=_RESULT_FORMAT,
            run_id=RunIdentifier(run_name=run_name),
        )
    context.build_data_docs()
    _add_offline_index(docs_dir, results)
    return results


def _add_offline_index(docs_dir: Path, results: dict[SuiteName, Any]) -> None:
    """Put a plain list of the result pages at the top of index.html.

    GX's index draws its tables with jQuery and bootstrap-table from CDNs, so offline it is
    empty; the result pages themselves are static HTML. The list hides when those scripts load.
    """
    items = []
    for name, result in results.items():
        page = next((docs_dir / "validations" / name).rglob("*.html"))  # one: the folder was cleared
        stats = result.statistics
        status = "passed" if result.success else "failed"
        counts = f"{stats['successful_expectations']} of {stats['evaluated_expectations']} expectations met"
        link = html.escape(page.relative_to(docs_dir).as_posix())
        items.append(
            f'<li><a href="{link}">{html.escape(name)}</a>: {status} ({counts})'
            f' &middot; <a href="expectations/{html.escape(name)}.html">expectations</a></li>'
        )
    listing = "".join(items) or "<li>no suite ran</li>"
    section = (
        '<section id="curate-offline-index" style="margin:1em 2em;font-family:sans-serif">'
        f"<h2>Validation results</h2><ul>{listing}</ul></section>"
        '<script>window.addEventListener("load", function () {'
        ' if (window.jQuery && window.jQuery.fn.bootstrapTable)'
        ' document.getElementById("curate-offline-index").remove(); });</script>'
    )
    index = docs_dir / "index.html"
    text = index.read_text(encoding="utf-8")
    index.write_text(re.sub(r"<body[^>]*>", lambda m: m.group(0) + section, text, count=1), encoding="utf-8")


# --- summary --------------------------------------------------------------------------------


def _details(result: Any) -> str:
    """What went wrong: the error GX raised, or how many rows broke it, which ids, which values."""
    if result.exception_info.get("raised_exception"):
        return f"error: {result.exception_info.get('exception_message')}"
    found = result.result
    if "unexpected_count" not in found:  # an aggregate expectation: only its observed value
        return f"observed {found.get('observed_value')}"
    rows = f"{found['unexpected_count']} of {found['element_count']} rows"
    if found.get("missing_count"):  # nulls are not checked, except by not-null expectations
        rows += f" ({found['missing_count']} without a value, not checked)"
    parts = [rows]
    ids = [str(row["id"]) for row in found.get("partial_unexpected_index_list") or [] if "id" in row]
    if ids:
        parts.append("ids " + _first(ids))
    values = [str(c["value"]) for c in found.get("partial_unexpected_counts") or [] if _present(c["value"])]
    if values and result.expectation_config.type != "expect_column_values_to_be_unique":  # ids suffice
        parts.append("values " + _first(values))
    return "; ".join(parts)


def _present(value: Any) -> bool:
    return not (value is None or isinstance(value, float) and math.isnan(value))  # GX: None or NaN


def _first(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")


def _entry(name: SuiteName, severity: str, result: Any) -> dict[str, Any]:
    failed = [
        {
            "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"),
            "details": _details(r),
        }
        for r in result.results
        if not r.success
    ]
    return {
        "name": name,
        "severity": severity,
        "success": bool(result.success),
        "expectations": len(result.results),
        "failed": failed,
        "data_docs": DOCS_INDEX,
    }


def validate_run(run_dir: Path, cfg: ValidationConfig) -> dict:
    """Run the configured suites on the run's kept records; write Data Docs and summary.json.

    Returns the summary: {"suites": [{name, severity, success, expectations, failed, data_docs}]},
    failed = [{expectation, column, details}]. A kind without records is skipped: success,
    0 expectations and a `note`. Raises nothing on failed expectations: see `enforce`.
    """
    records = pl.read_parquet(run_dir / "kept.parquet")
    out_dir = run_dir / OUT_DIR
    docs_dir = out_dir / "data_docs"
    shutil.rmtree(docs_dir, ignore_errors=True)  # pages of an earlier validation would linger
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {name: suite_frame(records, name) for name in cfg.suites}
    results = _run_suites({n: f for n, f in frames.items() if f.height}, cfg, docs_dir, run_dir.resolve().name)
    suites = []
    for name, suite_cfg in cfg.suites.items():
        if name in results:
            suites.append(_entry(name, suite_cfg.severity, results[name]))
        else:
            suites.append(
                {
                    "name": name,
                    "severity": suite_cfg.severity,
                    "success": True,
                    "expectations": 0,
                    "failed": [],
                    "data_docs": DOCS_INDEX,
                    "note": f"no {name} records: suite skipped",
                }
            )
    summary = {"suites": suites}
    (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return summary


def enforce(summary: dict) -> None:
    """Raise ValidationFailed if a `fail`-severity suite failed; `warn` suites never raise."""
    failed = [s for s in summary["suites"] if s["severity"] == "fail" and not s["success"]]
    if not failed:
        return
    lines = ["validation failed"]
    for suite in failed:
        failures = suite["failed"]
        lines.append(f"suite {suite['name']}: {len(failures)} of {suite['expectations']} expectations failed")
        lines += [f"  {f['column'] or '(table)'}: {f['expectation']} ({f['details']})" for f in failures]
    raise ValidationFailed("\n".join(lines), failed)
