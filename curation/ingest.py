"""Ingest: every input file and shape becomes rows of RECORD_SCHEMA, or rows of REJECT_SCHEMA.

A reader turns a file into input rows (a parsed JSON value, its source and raw bytes); a shape,
detected per file from the first JSON object, turns a row into record drafts; `Record`
validates each draft. Nothing malformed raises: it becomes a reject with a named reason, so
every input row is accounted for.

Given a directory, ingest streams: records and rejects go to parquet shards (curation/corpus.py)
every `batch_size` rows, and JSON Lines and parquet inputs are read a line / row group at a time,
so memory does not grow with the corpus (only the set of ids given out does).
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import polars as pl
from pydantic import ValidationError
from tqdm import tqdm

from curation.core.corpus import CorpusWriter, Source
from curation.core.stage import StageResult
from schemas.config import ConfigError, InputFormat, InputShape, InputSpec, expand_input
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA, Record, meta_json, records_frame, rejects_frame

STAGE = "ingest"
RAW_LIMIT = 2000  # characters of input text kept in a reject's `raw`
PARQUET_BATCH = 10_000  # rows read from a parquet input at a time

_SUFFIX_FORMATS: dict[str, InputFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".txt": "txt",
    ".md": "txt",
    ".rst": "txt",
}
# One map for ShareGPT `from` and OpenAI `role` values: their spellings do not collide.
_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "function_call": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
_ID_KEYS = ("id", "question_id")
_PAIRS = (
    ("prompt", ("response", "completion")),
    ("question", ("answer",)),
    ("query", ("response",)),
)

_Turn = dict[str, str]  # {"role", "content"}, as in MESSAGE_DTYPE


@dataclass
class IngestResult:
    """What ingest produced, and the figures stats.json needs."""

    records: Source  # RECORD_SCHEMA, in input order
    rejected: Source  # REJECT_SCHEMA, stage "ingest"
    rows_read: int  # input rows seen; a file that cannot be read at all counts as one
    seconds: float

    def stats(self) -> dict:
        """The "ingest" entry of stats.json."""
        extra = {"rows_read": self.rows_read}
        result = StageResult(self.records, self.rejected, self.seconds, extra)
        return result.stats(STAGE, self.records.height + self.rejected.height)


def detect_format(path: Path) -> InputFormat:
    """The input format from a file's extension, or hf_disk for a `save_to_disk` folder."""
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf_disk"
        raise ConfigError(f"{path}: a directory that is not a `datasets.save_to_disk` folder")
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join([*sorted(set(_SUFFIX_FORMATS.values())), "hf_disk"])
        raise ConfigError(f"{path}: cannot tell the format from the name; set `format:` ({known})")
    return fmt


def check_inputs(inputs: list[InputSpec]) -> None:
    """Expand every input and resolve every file's format; raise ConfigError before any work."""
    _plan(inputs)


def ingest(
    inputs: list[InputSpec], progress: bool = True, out: Path | None = None, batch_size: int = 10_000
) -> IngestResult:
    """Read every input into records (in input order) and rejects; bad rows never raise.

    With `out`, records and rejects are written as corpora to out/records and out/rejected
    (shards of `batch_size` rows, derived corpora in out/scratch) as they are read; without it
    they are returned as frames."""
    start = time.perf_counter()
    plan = _plan(inputs)
    # Ingest allocates millions of small objects that all survive: the cyclic GC would rescan
    # them over and over (a fifth of the run time on 100k rows) and can free nothing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        sinks = None
        if out is not None:
            scratch = out / "scratch"
            sinks = (
                CorpusWriter(out / "records", batch_size, scratch, RECORD_SCHEMA),
                CorpusWriter(out / "rejected", batch_size, scratch, REJECT_SCHEMA),
            )
        collector = _Collector(sinks, batch_size)
        for spec, path, fmt in tqdm(plan, desc=STAGE, unit="file", disable=not progress):
            collector.read_file(spec, fmt, path)
        records, rejected = collector.close()
    finally:
        if gc_was_enabled:
            gc.enable()
    return IngestResult(records, rejected, rows_read=collector.rows_read, seconds=time.perf_counter() - start)


def _plan(inputs: list[InputSpec]) -> list[tuple[InputSpec, Path, InputFormat]]:
    plan = []
    for i, spec in enumerate(inputs):
        files = expand_input(spec.path)
        if not files:
            raise ConfigError(f"inputs[{i}]: no file matches {spec.path}")
        for path in files:
            try:
                fmt = spec.format if spec.format != "auto" else detect_format(path)
            except ConfigError as exc:
                raise ConfigError(f"inputs[{i}]: {exc}") from None
            plan.append((spec, path, fmt))
    return plan


def _shown(path: Path) -> str:
    absolute = Path(os.path.abspath(path))  # not resolve(): keep the names the user wrote
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


# --- readers: a file -> input rows --------------------------------------------------------


@dataclass(slots=True)
class _Row:
    """One input row: a parsed JSON value, or the reason it could not be parsed."""

    source: str
    value: Any = None
    line: bytes | None = None  # the input bytes, when the row came from a line of text
    error: tuple[str, str] | None = None  # (reason, detail)

    def raw(self) -> str | None:
        if self.line is not None:
            return self.line.decode("utf-8", errors="replace")[:RAW_LIMIT]
        if self.error:
            return None  # a file that could not be read at all
        return orjson.dumps(self.value).decode()[:RAW_LIMIT]


_Reader = Callable[[Path, str, InputSpec], Iterator[_Row]]
_Tables = Iterable[tuple[str | None, pl.DataFrame]]  # (split name or None, table or a batch of it)


def _parse(source: str, data: bytes) -> _Row:
    try:
        return _Row(source, orjson.loads(data), data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            return _Row(source, line=data, error=("bad_encoding", str(bad)))
        return _Row(source, line=data, error=("bad_json", str(exc)))


def _read_bytes(path: Path) -> bytes:
    return path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM is not content


def _json_lines(data: bytes, shown: str) -> Iterator[_Row]:
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield _parse(f"{shown}:{n}", line)


def _read_jsonl(path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
    with path.open("rb") as f:  # a line at a time: the file is never all in memory
        for n, line in enumerate(f, 1):
            line = line.removeprefix(b"\xef\xbb\xbf") if n == 1 else line
            if line.strip():
                yield _parse(f"{shown}:{n}", line.rstrip(b"\r\n"))


def _read_json(path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
    data = _read_bytes(path)
    whole = _parse(shown, data)
    value = whole.value
    if whole.error:
        first = next((line for line in data.splitlines() if line.strip()), b"")
        if isinstance(_parse(shown, first).value, dict):
            yield from _json_lines(data, shown)  # `Dataset.to_json` writes JSON Lines to *.json
        else:
            yield whole
    elif isinstance(value, list):
        yield from (_Row(f"{shown}#{i}", v) for i, v in enumerate(value))
    elif isinstance(value, dict) and not _fits(value, spec.shape):
        # A container such as {"train": [...], "test": [...]}: each array of objects is a table.
        tables = [k for k, v in value.items() if _objects(v)]
        for key in tables:
            yield from (_Row(f"{shown}#{key}[{i}]", v) for i, v in enumerate(value[key]))
        if not tables:
            yield _Row(f"{shown}#0", value)
    else:
        yield _Row(f"{shown}#0", value)


def _objects(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _table_reader(load: Callable[[Path], _Tables]) -> _Reader:
    """A reader for a tabular format; its rows go through JSON, so all formats share one path."""

    def read(path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
        seen: dict[str | None, int] = {}  # rows so far per split: a split may come in batches
        batches = iter(load(path))
        while True:
            try:
                batch = next(batches, None)
                if batch is None:
                    return
                split, frame = batch
                # polars writes JSON-safe values (dates as strings) and each row's raw text.
                buffer = io.BytesIO()
                frame.write_ndjson(buffer)
            except Exception as exc:  # noqa: BLE001 - whatever the reader raises, reject the rest
                yield _Row(shown, error=("unreadable_file", f"{type(exc).__name__}: {exc}"))
                return
            prefix, first = f"{shown}[{split}]" if split else shown, seen.get(split, 0)
            lines = buffer.getvalue().splitlines()
            seen[split] = first + len(lines)
            yield from (_parse(f"{prefix}#{first + i}", line) for i, line in enumerate(lines))

    return read


def _load_parquet(path: Path) -> Iterator[tuple[str | None, pl.DataFrame]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):  # row groups, lazily
        yield None, pl.from_arrow(batch)  # type: ignore[misc]


def _load_csv(path: Path) -> _Tables:
    # All columns as strings; an empty field (quoted or not) is missing, like a null.
    frame = pl.read_csv(path, infer_schema=False)
    return [(None, frame.with_columns(pl.all().replace("", None)))]


def _load_hf_disk(path: Path) -> _Tables:
    import datasets  # imported here: it is slow to import and only this format needs it

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return [(str(split), ds.to_polars()) for split, ds in loaded.items()]
    return [(str(loaded.split) if loaded.split else None, loaded.to_polars())]


def _read_txt(path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
    data = _read_bytes(path)
    docs = _paragraphs(data) if spec.txt_split == "paragraph" else [(1, data)]
    for start, chunk in docs:
        source = f"{shown}:{start}"
        try:
            yield _Row(source, {"text": chunk.decode("utf-8")}, chunk)
        except UnicodeDecodeError as bad:
            yield _Row(source, line=chunk, error=("bad_encoding", str(bad)))


def _paragraphs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Blank-line separated paragraphs with their 1-based start line."""
    start, lines = 0, []
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            start = start if lines else n
            lines.append(line)
        elif lines:
            yield start, b"\n".join(lines)
            lines = []
    if lines:
        yield start, b"\n".join(lines)


_READERS: dict[str, _Reader] = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "parquet": _table_reader(_load_parquet),
    "csv": _table_reader(_load_csv),
    "txt": _read_txt,
    "hf_disk": _table_reader(_load_hf_disk),
}


# --- shapes: an input row -> record drafts ------------------------------------------------


class _Bad(Exception):
    """A row (or one conversation of it) that does not fit its shape."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(slots=True)
class _Draft:
    kind: str
    text: str | None = None
    messages: list[_Turn] | None = None
    chosen: list[_Turn] | None = None
    rejected: list[_Turn] | None = None
    id: str | None = None  # None: the row's own id, else a content hash
    meta: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # set when only this draft of the row is rejected


def _has(row: dict, *keys: str) -> bool:
    return all(row.get(k) is not None for k in keys)


def _require(row: dict, *keys: str, at: str = "") -> None:
    missing = [f"{at}.{k}" if at else k for k in keys if row.get(k) is None]
    if missing:
        raise _Bad("missing_fields", ", ".join(missing))


def _wrong(where: str, value: Any, expected: str) -> _Bad:
    return _Bad("wrong_type", f"{where}: expected {expected}, got {type(value).__name__}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _wrong(where, value, "string")
    if not value.strip():
        raise _Bad("empty_content", where)
    return value


def _optional_text(value: Any, where: str) -> str | None:
    return None if value is None or value == "" else _text(value, where)


def _msg(role: str, content: Any, where: str) -> _Turn:
    return {"role": role, "content": _text(content, where)}


def _joined_parts(value: Any, where: str) -> Any:
    """OpenAI content parts ([{type: text, text}]) as one string; other values as they are."""
    if not isinstance(value, list):
        return value
    texts = []
    for j, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise _Bad("wrong_type", f"{where}[{j}]: unsupported content part {kind!r}")
        texts.append(_text(part.get("text"), f"{where}[{j}].text"))
    return "\n".join(texts)


def _turns(value: Any, where: str) -> list[_Turn]:
    """Turns in ShareGPT ({from, value}) or OpenAI ({role, content}) spelling."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise _wrong(where, value, "list of turns")
    if not value:
        raise _Bad("empty_content", where)
    turns = []
    for i, turn in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(turn, dict):
            raise _wrong(at, turn, "object")
        role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
        _require(turn, role_key, text_key, at=at)
        role = _ROLES.get(turn[role_key]) if isinstance(turn[role_key], str) else None
        if role is None:
            raise _Bad("wrong_type", f"{at}.{role_key}: unknown role {turn[role_key]!r}")
        content_at = f"{at}.{text_key}"
        turns.append(_msg(role, _joined_parts(turn[text_key], content_at), content_at))
    return turns


def _system(row: dict, turns: list[_Turn]) -> list[_Turn]:
    system = _optional_text(row.get("system"), "system")
    if system is None or (turns and turns[0]["role"] == "system"):
        return turns
    return [{"role": "system", "content": system}, *turns]


def _ask(instruction: Any, extra: Any, extra_at: str) -> _Turn:
    """An instruction, then its optional input/context after a blank line."""
    content = _text(instruction, "instruction")
    more = _optional_text(extra, extra_at)
    return {"role": "user", "content": f"{content}\n\n{more}" if more else content}


def _sft(row: dict, *turns: _Turn) -> list[_Draft]:
    return [_Draft("sft", messages=_system(row, list(turns)))]


def _shape_text(row: dict) -> list[_Draft]:
    _require(row, "text")
    return [_Draft("raw", text=_text(row["text"], "text"))]


def _shape_alpaca(row: dict) -> list[_Draft]:
    _require(row, "instruction", "output")
    ask = _ask(row["instruction"], row.get("input"), "input")
    return _sft(row, ask, _msg("assistant", row["output"], "output"))


def _shape_dolly(row: dict) -> list[_Draft]:
    _require(row, "instruction", "response")
    ask = _ask(row["instruction"], row.get("context"), "context")
    return _sft(row, ask, _msg("assistant", row["response"], "response"))


def _shape_selfinstruct(row: dict) -> list[_Draft]:
    """One conversation per instance; a bad instance is rejected alone."""
    _require(row, "instruction", "instances")
    instances = row["instances"]
    if not isinstance(instances, list):
        raise _wrong("instances", instances, "list")
    if not instances:
        raise _Bad("empty_content", "instances")
    base = _input_id(row)
    drafts = []
    for k, instance in enumerate(instances):
        at = f"instances[{k}]"
        draft = _Draft("sft", id=None if base is None else f"{base}/{k}")
        try:
            if not isinstance(instance, dict):
                raise _wrong(at, instance, "object")
            _require(instance, "output", at=at)
            ask = _ask(row["instruction"], instance.get("input"), f"{at}.input")
            answer = _msg("assistant", instance["output"], f"{at}.output")
            draft.messages = _system(row, [ask, answer])
        except _Bad as bad:
            draft.error = (bad.reason, bad.detail)
        drafts.append(draft)
    return drafts


def _shape_sharegpt(row: dict) -> list[_Draft]:
    _require(row, "conversations")
    turns = _system(row, _turns(row["conversations"], "conversations"))
    if _has(row, "chosen", "rejected"):  # LLaMA-Factory's ShareGPT preference rows
        chosen, rejected = _turns(row["chosen"], "chosen"), _turns(row["rejected"], "rejected")
        return [_Draft("preference", messages=turns, chosen=chosen, rejected=rejected)]
    return [_Draft("sft", messages=turns)]


def _shape_messages(row: dict) -> list[_Draft]:
    _require(row, "messages")
    return [_Draft("sft", messages=_turns(row["messages"], "messages"))]


def _shape_prompt_response(row: dict) -> list[_Draft]:
    for ask, answers in _PAIRS:
        if row.get(ask) is not None:
            answer = next((a for a in answers if row.get(a) is not None), None)
            if answer is None:
                raise _Bad("missing_fields", "|".join(answers))
            return _sft(row, _msg("user", row[ask], ask), _msg("assistant", row[answer], answer))
    raise _Bad("missing_fields", "|".join(ask for ask, _ in _PAIRS))


def _side(row: dict, key: str, role: str) -> list[_Turn]:
    value = row[key]
    return [_msg(role, value, key)] if isinstance(value, str) else _turns(value, key)


def _shape_preference(row: dict) -> list[_Draft]:
    _require(row, "chosen", "rejected")
    chosen, rejected = _side(row, "chosen", "assistant"), _side(row, "rejected", "assistant")
    # TRL's implicit form (or full conversations next to a prompt): the shared head is context.
    common = 0
    while common < min(len(chosen), len(rejected)) - 1 and chosen[common] == rejected[common]:
        common += 1
    prompt = _side(row, "prompt", "user") if row.get("prompt") is not None else chosen[:common]
    if not prompt:
        raise _Bad("missing_fields", "prompt")
    return [
        _Draft(
            "preference",
            messages=_system(row, prompt),
            chosen=chosen[common:],
            rejected=rejected[common:],
        )
    ]


def _shape_openai_dpo(row: dict) -> list[_Draft]:
    _require(row, "input", "preferred_output", "non_preferred_output")
    if not isinstance(row["input"], dict):
        raise _wrong("input", row["input"], "object")
    _require(row["input"], "messages", at="input")
    return [
        _Draft(
            "preference",
            messages=_turns(row["input"]["messages"], "input.messages"),
            chosen=_turns(row["preferred_output"], "preferred_output"),
            rejected=_turns(row["non_preferred_output"], "non_preferred_output"),
        )
    ]


def _shape_oasst(row: dict) -> list[_Draft]:
    """One conversation per root-to-leaf path, cut after its last assistant turn.

    The id is the path's last message id: a path to a node is unique in a tree, and several
    unanswered prompter leaves under one reply cut back to the same conversation, kept once.
    """
    _require(row, "message_tree_id", "prompt")
    drafts, done = [], set()
    for path in _oasst_paths(row["prompt"], "prompt"):
        while path and path[-1][0].get("role") == "prompter":
            path = path[:-1]
        path = path or [(row["prompt"], "prompt")]  # nothing answered: Record rejects it
        ids = [str(node.get("message_id")) for node, _ in path]
        if ids[-1] in done:
            continue
        done.add(ids[-1])
        ranks = [node.get("rank") for node, _ in path]
        meta = {"tree_id": str(row["message_tree_id"]), "message_ids": ids, "ranks": ranks}
        draft = _Draft("sft", id=ids[-1], meta=meta)
        try:
            draft.messages = [_oasst_turn(node, at) for node, at in path]
        except _Bad as bad:
            draft.error = (bad.reason, bad.detail)
        draft.error = _oasst_moderated(path) or draft.error  # moderation outranks format faults
        drafts.append(draft)
    return drafts


def _oasst_paths(node: Any, at: str) -> Iterator[list[tuple[dict, str]]]:
    if not isinstance(node, dict):
        raise _wrong(at, node, "object")
    replies = node.get("replies") or []
    if not isinstance(replies, list):
        raise _wrong(f"{at}.replies", replies, "list")
    if not replies:
        yield [(node, at)]
    for i, reply in enumerate(replies):
        for tail in _oasst_paths(reply, f"{at}.replies[{i}]"):
            yield [(node, at), *tail]


def _oasst_turn(node: dict, at: str) -> _Turn:
    _require(node, "role", "text", at=at)
    role = _OASST_ROLES.get(node["role"])
    if role is None:
        raise _Bad("wrong_type", f"{at}.role: unknown role {node['role']!r}")
    return _msg(role, node["text"], f"{at}.text")


def _oasst_moderated(path: list[tuple[dict, str]]) -> tuple[str, str] | None:
    deleted = [f"{at} ({n.get('message_id')})" for n, at in path if n.get("deleted")]
    if deleted:
        return "oasst_deleted", deleted[0]
    failed = [f"{at} ({n.get('message_id')})" for n, at in path if n.get("review_result") is False]
    return ("oasst_review_failed", failed[0]) if failed else None


class _Shape(NamedTuple):
    convert: Callable[[dict], list[_Draft]]
    signatures: tuple[tuple[str, ...], ...]  # a row fits when it has every key of one of these
    uses: frozenset[str]  # keys the shape consumes; the rest of the row goes to meta

    def fits(self, row: dict) -> bool:
        return any(_has(row, *keys) for keys in self.signatures)


def _shape(
    convert: Callable[[dict], list[_Draft]], signatures: list[tuple[str, ...]], *uses: str
) -> _Shape:
    used = {key for keys in signatures for key in keys} | {*uses, *_ID_KEYS}
    return _Shape(convert, tuple(signatures), frozenset(used))


# Detection tries these in order, so the more specific signatures come first.
_SHAPES: dict[str, _Shape] = {
    "oasst": _shape(_shape_oasst, [("message_tree_id", "prompt")]),
    "openai_dpo": _shape(
        _shape_openai_dpo, [("preferred_output", "non_preferred_output")], "input"
    ),
    "sharegpt": _shape(_shape_sharegpt, [("conversations",)], "system", "chosen", "rejected"),
    "messages": _shape(_shape_messages, [("messages",)]),
    "selfinstruct": _shape(_shape_selfinstruct, [("instruction", "instances")], "system"),
    "preference": _shape(_shape_preference, [("chosen", "rejected")], "prompt", "system"),
    "alpaca": _shape(_shape_alpaca, [("instruction", "output")], "input", "system"),
    "dolly": _shape(_shape_dolly, [("instruction", "response")], "context", "system"),
    "prompt_response": _shape(
        _shape_prompt_response, [(ask, a) for ask, answers in _PAIRS for a in answers], "system"
    ),
    "text": _shape(_shape_text, [("text",)]),
}


def _detect(row: dict) -> str | None:
    return next((name for name, shape in _SHAPES.items() if shape.fits(row)), None)


def _fits(row: dict, shape: InputShape) -> bool:
    return _detect(row) is not None if shape == "auto" else _SHAPES[shape].fits(row)


def _input_id(row: dict) -> str | None:
    return next((str(row[k]) for k in _ID_KEYS if row.get(k) not in (None, "")), None)


# --- the run: drafts -> validated records and rejects -------------------------------------


def _content_id(draft: _Draft) -> str:
    fields = [draft.kind, draft.text, draft.messages, draft.chosen, draft.rejected]
    return hashlib.sha1(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _error_detail(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


class _Collector:
    """Records and rejects in input order, with run-wide unique ids; with sinks, handed to them
    every `batch_size` rows."""

    def __init__(self, sinks: tuple[CorpusWriter, CorpusWriter] | None = None, batch_size: int = 10_000) -> None:
        self.records: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []
        self.sinks, self.batch_size = sinks, batch_size
        self.rows_read = 0
        self.taken: set[str] = set()
        self.suffixes: dict[str, int] = {}  # input id -> the last suffix number given to it

    def close(self) -> tuple[Source, Source]:
        if self.sinks is None:
            return records_frame(self.records), rejects_frame(self.rejects)
        self.flush()
        return self.sinks[0].close(), self.sinks[1].close()

    def flush(self) -> None:
        if self.sinks is not None:
            self.sinks[0].write(records_frame(self.records))
            self.sinks[1].write(rejects_frame(self.rejects))
            self.records, self.rejects = [], []

    def read_file(self, spec: InputSpec, fmt: InputFormat, path: Path) -> None:
        shown = _shown(path)
        rows = self._rows(fmt, path, shown, spec)
        shape: str | None = spec.shape
        if shape == "auto":  # from the first object: rows before it are held, the rest stream
            ahead = []
            for row in rows:
                ahead.append(row)
                if isinstance(row.value, dict):
                    break
            shape = _detect(ahead[-1].value) if ahead and isinstance(ahead[-1].value, dict) else None
            rows = itertools.chain(ahead, rows)
        for row in rows:
            if self.sinks is not None and len(self.records) + len(self.rejects) >= self.batch_size:
                self.flush()
            value = row.value
            if row.error:
                self.reject(row, *row.error)
            elif not isinstance(value, dict):
                self.reject(row, "not_an_object", f"expected an object, got {type(value).__name__}")
            elif shape is None:
                keys = ", ".join(value) or "(none)"
                detail = f"no shape fits keys: {keys}; set `shape:`"
                self.reject(row, "unknown_shape", detail, id=_input_id(value))
            else:
                self.convert(row, value, shape)

    def _rows(self, fmt: InputFormat, path: Path, shown: str, spec: InputSpec) -> Iterator[_Row]:
        try:
            for row in _READERS[fmt](path, shown, spec):
                self.rows_read += 1
                yield row
        except OSError as exc:  # e.g. no permission: the (rest of the) file is rejected, the run goes on
            self.rows_read += 1
            yield _Row(shown, error=("unreadable_file", f"{type(exc).__name__}: {exc}"))

    def convert(self, row: _Row, value: dict, shape: str) -> None:
        spec = _SHAPES[shape]
        try:
            drafts = spec.convert(value)
        except _Bad as bad:
            self.reject(row, bad.reason, bad.detail, id=_input_id(value))
            return
        extras = {k: v for k, v in value.items() if k not in spec.uses and v is not None}
        row_id = _input_id(value)
        for draft in drafts:
            self.add(row, draft, {**extras, **draft.meta, "shape": shape}, row_id)

    def add(self, row: _Row, draft: _Draft, meta: dict[str, Any], row_id: str | None) -> None:
        rid = draft.id or row_id or _content_id(draft)
        if draft.error:
            self.reject(row, *draft.error, draft=draft, id=rid, meta=meta_json(meta))
            return
        fields = {"id": rid, "source": row.source, "kind": draft.kind, "text": draft.text}
        fields |= {"messages": draft.messages, "chosen": draft.chosen, "rejected": draft.rejected}
        try:
            Record(**fields, meta=meta)
        except ValidationError as exc:
            detail = _error_detail(exc)
            self.reject(row, "invalid_record", detail, draft=draft, id=rid, meta=meta_json(meta))
            return
        # The validated fields are plain role/content dicts already, so they are the row:
        # Record.to_row (model_dump + json.dumps) would cost as much again as the validation.
        fields["id"] = self.unique(rid)
        if fields["id"] != rid:
            meta["input_id"] = rid
        fields["meta"] = meta_json(meta)
        self.records.append(fields)

    def unique(self, rid: str) -> str:
        candidate, n = rid, self.suffixes.get(rid, 1)
        while candidate in self.taken:  # also steps over input ids that look like "x~2"
            n += 1
            candidate = f"{rid}~{n}"
        self.suffixes[rid] = n
        self.taken.add(candidate)
        return candidate

    def reject(
        self, row: _Row, reason: str, detail: str, draft: _Draft | None = None, **record: Any
    ) -> None:
        if draft is not None:
            record |= {"kind": draft.kind, "text": draft.text, "messages": draft.messages}
            record |= {"chosen": draft.chosen, "rejected": draft.rejected}
        record |= {"source": row.source, "stage": STAGE, "reason": reason, "detail": detail}
        self.rejects.append({**record, "raw": row.raw()})
