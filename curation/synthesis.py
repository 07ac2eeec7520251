"""Instruction synthesis: raw documents -> instruction/answer pairs grounded in them.

Each raw document is cut into token-bounded chunks (`chunk_tokens`, `chunk_overlap`) and a
generator model writes `pairs_per_chunk` pairs per chunk from a prompt template
(curation/resources/prompts/<name>.jinja, or a file). Every pair becomes a new sft record whose
`meta.synthesis` names the source record, the chunk's character span and the generator, so a
pair can always be traced to the text it came from. The new records then go through the same
filters, dedup and jury as any other. The raw documents stay in the run.

An answer the generator gets wrong (unparsable, or a failed request) produces no record; it is
counted and written with its raw output to RUN_DIR/synthesis/failures.jsonl.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from curation.llm.failures import check_failures
from curation.llm.types import ChatModel, ChatRequest, Completion
from schemas.base import ConfigError, StageFailed
from schemas.figures import ModelUsage, SynthesisFigures
from schemas.jury import SynthesisConfig
from schemas.record import Record, records_frame

STAGE = "synthesis"
PROMPTS = Path(__file__).resolve().parent / "resources" / "prompts"
PAIRS_SCHEMA = {
    "type": "object",
    "properties": {
        "pairs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"instruction": {"type": "string"}, "answer": {"type": "string"}},
                "required": ["instruction", "answer"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["pairs"],
    "additionalProperties": False,
}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    record_id: str
    source: str
    start: int  # character span in the document
    end: int
    text: str


def load_prompt(name_or_path: str) -> str:
    bundled = PROMPTS / f"{name_or_path}.jinja"
    path = bundled if bundled.is_file() else Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"synthesis.template: no bundled prompt {name_or_path!r} and no such file")
    return path.read_text(encoding="utf-8")


def chunk_spans(text: str, tokenizer, chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of consecutive windows of at most `chunk_tokens` tokens."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if not offsets:
        return []
    spans, step = [], chunk_tokens - overlap
    for first in range(0, len(offsets), step):
        last = min(first + chunk_tokens, len(offsets)) - 1
        spans.append((offsets[first][0], offsets[last][1]))
        if last == len(offsets) - 1:
            break
    return spans


def make_chunks(raw: pl.DataFrame, tokenizer, cfg: SynthesisConfig) -> list[Chunk]:
    chunks = []
    for row in raw.iter_rows(named=True):
        for start, end in chunk_spans(row["text"], tokenizer, cfg.chunk_tokens, cfg.chunk_overlap):
            if row["text"][start:end].strip():
                chunks.append(Chunk(row["id"], row["source"], start, end, row["text"][start:end]))
            if cfg.max_chunks is not None and len(chunks) >= cfg.max_chunks:
                return chunks
    return chunks


def parse_pairs(text: str | None) -> list[tuple[str, str]] | None:
    """Instruction/answer pairs from a generator's answer; None when nothing usable is in it.

    Tolerant: a JSON array or {"pairs": [...]} object, inside ```json fences or prose; keys
    instruction/question/prompt and answer/response/output.
    """
    if not text:
        return None
    for candidate in _json_candidates(text):
        try:
            data = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict):
            data = data.get("pairs", [data])
        if not isinstance(data, list):
            continue
        pairs = [p for p in (_pair(item) for item in data) if p is not None]
        if pairs:
            return pairs
    return None


def _json_candidates(text: str) -> list[str]:
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    spans = [text[text.find(o) : text.rfind(c) + 1] for o, c in ("[]", "{}") if o in text and c in text]
    return [*fenced, text.strip(), *spans]


def _pair(item: object) -> tuple[str, str] | None:
    if not isinstance(item, dict):
        return None
    question = next((item[k] for k in ("instruction", "question", "prompt") if isinstance(item.get(k), str)), "")
    answer = next((item[k] for k in ("answer", "response", "output") if isinstance(item.get(k), str)), "")
    return (question.strip(), answer.strip()) if question.strip() and answer.strip() else None


def synthesize(
    raw: pl.DataFrame, cfg: SynthesisConfig, generator: ChatModel, tokenizer, out_dir: Path, progress: bool = True
) -> tuple[pl.DataFrame, SynthesisFigures]:
    """New sft records from the raw documents in `raw`, and the figures for stats.json."""
    template = SandboxedEnvironment(undefined=StrictUndefined).from_string(load_prompt(cfg.template))
    template_hash = hashlib.sha256(load_prompt(cfg.template).encode()).hexdigest()[:16]
    chunks = make_chunks(raw, tokenizer, cfg)
    requests = [
        ChatRequest(
            messages=(("user", template.render(chunk=c.text, n=cfg.pairs_per_chunk)),),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            json_schema=PAIRS_SCHEMA,
            seed=0,
        )
        for c in chunks
    ]
    try:
        answers = generator.complete(requests, progress="synthesis" if progress else None)
    except StageFailed as exc:
        raise StageFailed(f"synthesis: generator: {exc}") from None
    errors = Counter(a.error for a in answers if a.text is None)  # failed requests, not unreadable answers
    causes = {generator.identity: errors}
    check_failures("synthesis", errors.total(), len(requests), cfg.max_failed, "synthesis.max_failed", causes)
    rows, failures = [], []
    for chunk, answer in zip(chunks, answers, strict=True):
        pairs = parse_pairs(answer.text)
        if pairs is None:
            failures.append(_failure(chunk, answer))
            continue
        for n, (instruction, reply) in enumerate(pairs[: cfg.pairs_per_chunk]):
            rows.append(_record(chunk, n, instruction, reply, generator.identity, template_hash))
    _write_failures(out_dir / STAGE, failures)
    figures = SynthesisFigures(documents=raw.height, chunks=len(chunks), generated=len(rows), failed_chunks=len(failures),
                               generator=generator.identity, usage=ModelUsage.model_validate(vars(generator.usage)))
    if failures:
        log.warning("synthesis: %d of %d chunks gave no usable pairs (see %s)", len(failures), len(chunks), out_dir / STAGE)
    return records_frame(rows) if rows else records_frame([]), figures


def _record(chunk: Chunk, n: int, instruction: str, answer: str, generator: str, template_hash: str) -> dict:
    key = f"{chunk.record_id}:{chunk.start}:{chunk.end}:{n}:{generator}:{template_hash}"
    return Record(
        id="syn-" + hashlib.sha1(key.encode()).hexdigest()[:16],
        source=f"{chunk.source}@{chunk.start}-{chunk.end}",
        kind="sft",
        messages=[{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}],
        meta={
            "synthesis": {
                "from": chunk.record_id,
                "span": [chunk.start, chunk.end],
                "generator": generator,
                "template": template_hash,
            }
        },
    ).to_row()


def _failure(chunk: Chunk, answer: Completion) -> dict:
    return {
        "from": chunk.record_id,
        "source": chunk.source,
        "span": [chunk.start, chunk.end],
        "error": answer.error or "unparsable",
        "raw": answer.text,
    }


def _write_failures(folder: Path, failures: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "failures.jsonl").open("wb") as f:
        for failure in failures:
            f.write(orjson.dumps(failure) + b"\n")
