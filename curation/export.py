"""Export: the kept records as chat-formatted training sets, checked, measured and documented.

Writes into the run's `export/` folder:

    alpaca.json, sharegpt.json, openai.jsonl   sft records (Alpaca: single-turn ones only)
    preference.jsonl                           TRL's explicit conversational preference form
    preference_llamafactory.json               the same pairs as LLaMA-Factory ShareGPT ranking rows
    hf/sft, hf/preference                      datasets.DatasetDict (seeded train/test split)
    dataset_info.json, axolotl.yaml            how LLaMA-Factory and Axolotl load the files
    README.md                                  dataset card

Every record of an exported kind is checked before anything is written. One that breaks a rule
becomes a reject of stage "export" and leaves the kept set, so ingested == kept + rejected holds:

    empty_conversation     no turns (a preference row without a prompt or an answer)
    empty_turn             a turn with blank content
    roles_not_alternating  after an optional first system turn, user and assistant alternate; a
                           tool turn may take the user's place right after an assistant turn
    wrong_final_role       a conversation must end with an answer, a preference prompt with a user turn
    same_chosen_rejected   chosen and rejected say the same
    template_error         the chat template refuses the conversation (Mistral: tool turns)
    too_long               over max_seq_length tokens with `overlength: drop`; with `truncate`, only
                           rows whose prompt alone fills the window (no answer token left to learn)

Records of a kind no selected format takes (raw text; preference rows when `preference` is not
selected) stay kept and are counted as not exported. Token lengths use the rendering TRL trains
on: the chat template applied with `tokenize=False`, then tokenized without special tokens.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import yaml
from datasets import Dataset, DatasetDict
from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from curation.core.stage import StageResult, split_rejects
from schemas.chat import apply_template, named_template
from schemas.export import ExportConfig, ExportFormat

STAGE = "export"
Messages = list[dict[str, str]]
Row = dict[str, Any]  # a record as `DataFrame.to_dicts()` gives it

FILES: dict[ExportFormat, str] = {
    "alpaca": "alpaca.json",
    "sharegpt": "sharegpt.json",
    "openai": "openai.jsonl",
    "preference": "preference.jsonl",
}
LLAMAFACTORY_PREFERENCE = "preference_llamafactory.json"
FORMAT_KIND: dict[ExportFormat, str] = {
    "alpaca": "sft",
    "sharegpt": "sft",
    "openai": "sft",
    "preference": "preference",
}
# Everything export_run writes.
OUTPUTS = (*FILES.values(), LLAMAFACTORY_PREFERENCE, "hf", "dataset_info.json", "axolotl.yaml", "README.md")

# ShareGPT speakers (LLaMA-Factory's default tags) for the canonical roles.
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}
_TOKENIZE_BATCH = 1000


# --- checks -------------------------------------------------------------------------------


def conversation_problem(turns: Messages, last_role: str, what: str) -> tuple[str, str] | None:
    """(reason, detail) for the first rule the turns break, or None.

    An optional system turn comes first; then user and assistant alternate, starting with the
    user. A tool turn (a tool's result) may stand in for the user right after an assistant turn.
    """
    if not turns:
        return "empty_conversation", f"the {what} has no turns"
    for i, turn in enumerate(turns):
        if not (turn["content"] or "").strip():
            return "empty_turn", f"{what} turn {i} ({turn['role']}) is empty"
    start = 1 if turns[0]["role"] == "system" else 0
    for i in range(start, len(turns)):
        role = turns[i]["role"]
        answering = (i - start) % 2 == 1
        fits = (role == "assistant") if answering else (role == "user" or (role == "tool" and i > start))
        if not fits:
            after = turns[i - 1]["role"] if i else "nothing"
            return "roles_not_alternating", f"{what} turn {i}: {role} after {after}"
    if turns[-1]["role"] != last_role:
        return "wrong_final_role", f"the {what} ends with a {turns[-1]['role']} turn, not {last_role}"
    return None


def record_problem(row: Row) -> tuple[str, str] | None:
    """(reason, detail) when an sft or preference record cannot be exported as it is."""
    if row["kind"] == "sft":
        return conversation_problem(row["messages"] or [], "assistant", "conversation")
    prompt = row["messages"] or []
    problem = conversation_problem(prompt, "user", "prompt")
    if problem:
        return problem
    for side in ("chosen", "rejected"):
        if not row[side]:
            return "empty_conversation", f"{side} has no turns"
        problem = conversation_problem(prompt + row[side], "assistant", f"prompt + {side}")
        if problem:
            return problem
    if _contents(row["chosen"]) == _contents(row["rejected"]):
        return "same_chosen_rejected", "chosen and rejected have the same content"
    return None


def _contents(turns: Messages) -> list[str]:
    return [t["content"].strip() for t in turns]


# --- rendering and token lengths ----------------------------------------------------------


def render(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, add_generation_prompt: bool = False
) -> str:
    """A conversation as the trainer sees it (TRL renders with these arguments, then tokenizes)."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def token_counts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    """Tokens per rendered text; special tokens are in the text already, none are added."""
    counts: list[int] = []
    for start in range(0, len(texts), _TOKENIZE_BATCH):  # batches bound the memory of the ids
        batch = tokenizer(texts[start : start + _TOKENIZE_BATCH], add_special_tokens=False)
        counts += [len(ids) for ids in batch["input_ids"]]
    return counts


def trained_conversations(row: Row) -> list[Messages]:
    """What a row trains on, as full conversations: sft its own, preference prompt + each answer."""
    if row["kind"] == "sft":
        return [row["messages"]]
    return [row["messages"] + row["chosen"], row["messages"] + row["rejected"]]


def _prompt(row: Row) -> Messages:
    """The context before the first answer: what training conditions on but never learns."""
    turns = row["messages"]
    if row["kind"] == "preference":
        return turns
    return turns[: next(i for i, t in enumerate(turns) if t["role"] == "assistant")]


@dataclass
class _Checked:
    """A record of an exported kind: why it cannot be exported, or how long it renders."""

    row: Row
    reason: str | None = None
    detail: str | None = None
    tokens: int | None = None  # the longest of its trained conversations
    truncated: bool = False  # over max_seq_length, kept to be cut at train time

    def reject(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def _measure(checked: list[_Checked], tokenizer: PreTrainedTokenizerBase, cfg: ExportConfig) -> None:
    """Render and count every structurally valid record, then settle the ones over the limit."""
    texts: list[str] = []
    owners: list[_Checked] = []
    for item in checked:
        if item.reason:
            continue
        try:
            rendered = [render(tokenizer, turns) for turns in trained_conversations(item.row)]
        except TemplateError as exc:
            item.reject("template_error", str(exc))
            continue
        texts += rendered
        owners += [item] * len(rendered)
    for item, count in zip(owners, token_counts(tokenizer, texts), strict=True):
        item.tokens = max(item.tokens or 0, count)
    limit = cfg.max_seq_length
    for item in checked:
        if item.tokens is None or item.tokens <= limit:
            continue
        if cfg.overlength == "drop":
            item.reject("too_long", f"{item.tokens} tokens > max_seq_length {limit}")
            continue
        prompt = render(tokenizer, _prompt(item.row), add_generation_prompt=True)
        prompt_tokens = token_counts(tokenizer, [prompt])[0]
        if prompt_tokens >= limit:  # truncation would cut every answer token
            item.reject("too_long", f"the prompt alone has {prompt_tokens} tokens (max_seq_length {limit})")
        else:
            item.truncated = True


# --- formats -------------------------------------------------------------------------------


def _sharegpt_turns(turns: Messages) -> list[dict[str, str]]:
    """ShareGPT turns; an assistant turn a tool answers was a tool call (LLaMA-Factory's function_call)."""
    out = []
    for i, turn in enumerate(turns):
        speaker = _SHAREGPT_FROM[turn["role"]]
        if turn["role"] == "assistant" and i + 1 < len(turns) and turns[i + 1]["role"] == "tool":
            speaker = "function_call"
        out.append({"from": speaker, "value": turn["content"]})
    return out


def _alpaca(row: Row) -> dict[str, str] | None:
    turns = row["messages"]
    system = turns[0]["content"] if turns[0]["role"] == "system" else None
    rest = turns[1:] if system is not None else turns
    if len(rest) != 2:  # checked turns alternate, so two are one question and its answer
        return None
    out = {"id": row["id"], "instruction": rest[0]["content"], "input": "", "output": rest[1]["content"]}
    return out | ({"system": system} if system is not None else {})


def _sharegpt(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "conversations": _sharegpt_turns(row["messages"])}


def _openai(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "messages": row["messages"]}


def _preference(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "prompt": row["messages"], "chosen": row["chosen"], "rejected": row["rejected"]}


def _llamafactory_pair(row: Row) -> dict[str, Any] | None:
    """LLaMA-Factory's ShareGPT ranking row: the answers are single messages, not lists."""
    if len(row["chosen"]) != 1 or len(row["rejected"]) != 1:
        return None
    (chosen,), (rejected,) = _sharegpt_turns(row["chosen"]), _sharegpt_turns(row["rejected"])
    conversations = _sharegpt_turns(row["messages"])
    return {"id": row["id"], "conversations": conversations, "chosen": chosen, "rejected": rejected}


Formatter = Callable[[Row], dict[str, Any] | None]  # None: the row does not fit the format
_FORMATTERS: dict[ExportFormat, Formatter] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "openai": _openai,
    "preference": _preference,
}


def _outputs(formats: list[ExportFormat]) -> list[tuple[str, str, Formatter]]:
    """(file, the set it draws from, row formatter) per file; preference adds LLaMA-Factory's."""
    outputs = [(FILES[f], FORMAT_KIND[f], _FORMATTERS[f]) for f in formats]
    if "preference" in formats:
        outputs.append((LLAMAFACTORY_PREFERENCE, "preference", _llamafactory_pair))
    return outputs


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """A JSON array (.json, what LLaMA-Factory's examples use) or JSON lines (.jsonl)."""
    if path.suffix == ".jsonl":
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    else:
        _write_json(path, rows)


def _write_json(path: Path, value: Any) -> None:
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


# --- Hugging Face datasets -----------------------------------------------------------------


def split(dataset: Dataset, test_size: float, seed: int) -> DatasetDict:
    """A seeded train/test split; below 2 rows everything is train (nothing can be held out)."""
    if dataset.num_rows < 2:
        return DatasetDict(train=dataset)
    # datasets' own rounding (test rounds up), keeping at least one train row.
    n_test = min(math.ceil(test_size * dataset.num_rows), dataset.num_rows - 1)
    return dataset.train_test_split(test_size=n_test, seed=seed)


_HF_ROWS: dict[str, Formatter] = {"sft": _openai, "preference": _preference}  # TRL's column shapes


# --- the stage ----------------------------------------------------------------------------


def export_run(
    records: pl.DataFrame,
    cfg: ExportConfig,
    out_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    run_stats: dict[str, Any],
) -> StageResult:
    """Check, measure and write the exported sets; records that cannot be exported are rejects.

    `tokenizer` is the target model's (its own template, or `cfg.chat_template` put on a copy);
    `run_stats` is the run's stats.json content so far (its "stages" go into the dataset card).
    The result's `extra` holds the export figures for stats.json.
    """
    tokenizer = apply_template(tokenizer, cfg.chat_template)
    kinds = sorted({FORMAT_KIND[f] for f in cfg.formats})
    rows = records.select("id", "source", "kind", "messages", "chosen", "rejected").to_dicts()
    checked = [_Checked(row) if row["kind"] in kinds else None for row in rows]
    exported = [item for item in checked if item is not None]
    _check(exported, tokenizer, cfg)
    result = split_rejects(
        records,
        STAGE,
        pl.Series([c.reason if c else None for c in checked], dtype=pl.String),
        pl.Series([c.detail if c else None for c in checked], dtype=pl.String),
    )
    sets = {kind: [c.row for c in exported if c.reason is None and c.row["kind"] == kind] for kind in kinds}

    _clear(out_dir)
    files = _write_files(out_dir, cfg.formats, sets)
    stats = {
        "chat_template": cfg.chat_template or "tokenizer",
        "tokenizer": tokenizer.name_or_path,
        "max_seq_length": cfg.max_seq_length,
        "overlength": cfg.overlength,
        "files": files,
        "splits": {kind: _write_hf(out_dir / "hf" / kind, kind, sets[kind], cfg) for kind in kinds},
        "tokens": {kind: _token_stats(exported, kind, cfg) for kind in kinds},
        "not_exported": dict(Counter(r["kind"] for r, c in zip(rows, checked, strict=True) if c is None)),
    }
    _write_json(out_dir / "dataset_info.json", _llamafactory_info(files))
    (out_dir / "axolotl.yaml").write_text(_axolotl_yaml(out_dir, files, cfg), encoding="utf-8")
    scores = _score_stats(records, [r["id"] for set_rows in sets.values() for r in set_rows])
    card = dataset_card(out_dir.parent.name, stats, result, sets, scores, run_stats)
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    result.extra = stats
    return result


def _check(checked: list[_Checked], tokenizer: PreTrainedTokenizerBase, cfg: ExportConfig) -> None:
    """Mark every record that breaks a rule; measure the rest."""
    for item in checked:
        problem = record_problem(item.row)
        if problem:
            item.reject(*problem)
    _measure(checked, tokenizer, cfg)


def _clear(out_dir: Path) -> None:
    """Remove what an earlier export wrote, so no file of it outlives a change of formats."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def _write_files(out_dir: Path, formats: list[ExportFormat], sets: dict[str, list[Row]]) -> dict[str, dict]:
    """Each selected format's file; rows that do not fit a format are counted, empty files skipped."""
    written = {}
    for name, kind, formatter in _outputs(formats):
        rows = [out for row in sets[kind] if (out := formatter(row)) is not None]
        entry: dict[str, Any] = {"rows": len(rows), "skipped": len(sets[kind]) - len(rows)}
        if rows:
            _write_rows(out_dir / name, rows)
            entry["system_column"] = any("system" in r for r in rows)
        written[name] = entry
    return written


def _write_hf(path: Path, kind: str, rows: list[Row], cfg: ExportConfig) -> dict[str, Any]:
    if not rows:
        return {"note": "no rows: not written"}
    splits = split(Dataset.from_list([_HF_ROWS[kind](r) for r in rows]), cfg.test_size, cfg.seed)
    splits.save_to_disk(str(path))
    counts: dict[str, Any] = {name: part.num_rows for name, part in splits.items()}
    if "test" not in splits:
        counts["note"] = "fewer than 2 rows: no test split, all train"
    return counts


_SUMMARY = ("count", "min", "mean", "p50", "p95", "max")


def summary(values: Iterable[float]) -> dict[str, float]:
    """count, min, mean, p50, p95, max; nearest-rank percentiles, so each is a value that occurs."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}

    def rank(q: float) -> float:
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]

    return {
        "count": len(ordered),
        "min": ordered[0],
        "mean": round(sum(ordered) / len(ordered), 2),
        "p50": rank(0.5),
        "p95": rank(0.95),
        "max": ordered[-1],
    }


def _token_stats(checked: list[_Checked], kind: str, cfg: ExportConfig) -> dict[str, Any]:
    """Lengths of every rendered record of a kind, and what became of those over the limit."""
    measured = [c for c in checked if c.row["kind"] == kind and c.tokens is not None]
    over = [c for c in measured if c.tokens > cfg.max_seq_length]
    return {
        **summary(c.tokens for c in measured),
        "over_max_seq_length": len(over),
        "dropped_too_long": sum(c.reason == "too_long" for c in over),
        "kept_for_truncation": sum(c.truncated for c in over),
    }


def _score_stats(records: pl.DataFrame, ids: list[str]) -> dict[str, dict[str, float]]:
    """Distributions of numeric `score` / `*_score` columns over the exported records."""
    columns = [
        name
        for name, dtype in records.schema.items()
        if (name == "score" or name.endswith("_score")) and dtype.is_numeric()
    ]
    chosen = records.filter(pl.col("id").is_in(ids))
    return {name: summary(chosen[name].drop_nulls().to_list()) for name in columns}


# --- LLaMA-Factory and Axolotl -------------------------------------------------------------

_ROLE_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
# LLaMA-Factory dataset_info.json entry name -> (file, entry); the entry names are ours.
_LLAMAFACTORY: dict[str, tuple[str, dict[str, Any]]] = {
    "curate_alpaca": (
        FILES["alpaca"],
        {
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        },
    ),
    "curate_sharegpt": (
        FILES["sharegpt"],
        {"formatting": "sharegpt", "columns": {"messages": "conversations"}},
    ),
    "curate_openai": (
        FILES["openai"],
        {
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {**_ROLE_TAGS, "observation_tag": "tool", "system_tag": "system"},
        },
    ),
    # ShareGPT ranking rows; TRL's preference.jsonl (answers as lists) is not LLaMA-Factory's shape.
    "curate_preference": (
        LLAMAFACTORY_PREFERENCE,
        {
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
    ),
}


def _llamafactory_info(files: dict[str, dict]) -> dict[str, Any]:
    """dataset_info.json: one entry per written file LLaMA-Factory reads."""
    info = {}
    for name, (file, spec) in _LLAMAFACTORY.items():
        written = files.get(file, {})
        if not written.get("rows"):
            continue
        entry = {"file_name": file, **spec}
        if written["system_column"]:  # mapped only when present: LLaMA-Factory needs the column
            entry["columns"] = {**spec["columns"], "system": "system"}
        info[name] = entry
    return info


_SHAREGPT_ROLES = {
    "system": ["system"],
    "user": ["human"],
    "assistant": ["gpt", "function_call"],
    "tool": ["observation"],
}
_SHAREGPT_PROPERTIES = {"role": "from", "content": "value"}
# Axolotl fragment name -> (file, dataset spec).
_AXOLOTL: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": (
        FILES["openai"],
        {"type": "chat_template", "field_messages": "messages", "roles_to_train": ["assistant"]},
    ),
    "sharegpt": (
        FILES["sharegpt"],
        {
            "type": "chat_template",
            "field_messages": "conversations",
            "message_property_mappings": _SHAREGPT_PROPERTIES,
            "roles": _SHAREGPT_ROLES,
            "roles_to_train": ["assistant"],
        },
    ),
    "alpaca": (FILES["alpaca"], {"type": "alpaca"}),
    # Axolotl's chat_template.default DPO type wants single-message answers: LLaMA-Factory's file.
    "preference": (
        LLAMAFACTORY_PREFERENCE,
        {
            "type": "chat_template.default",
            "field_messages": "conversations",
            "field_chosen": "chosen",
            "field_rejected": "rejected",
            "message_property_mappings": _SHAREGPT_PROPERTIES,
            "roles": _SHAREGPT_ROLES,
        },
    ),
}


def _axolotl_yaml(out_dir: Path, files: dict[str, dict], cfg: ExportConfig) -> str:
    """One Axolotl config fragment per written set; paste the one you train on."""
    if cfg.chat_template is None:
        template: dict[str, Any] = {"chat_template": "tokenizer_default"}
    else:  # the exact template this export measured, so Axolotl renders the same text
        template = {"chat_template": "jinja", "chat_template_jinja": named_template(cfg.chat_template)}
    fragments = {}
    for name, (file, spec) in _AXOLOTL.items():
        if not files.get(file, {}).get("rows"):
            continue
        fragment: dict[str, Any] = {"rl": "dpo"} if name == "preference" else {}
        if spec["type"] != "alpaca":  # Alpaca renders with Axolotl's own prompt, not a template
            fragment |= template
        fragment["datasets"] = [{"path": str(out_dir.resolve() / file), "ds_type": "json", **spec}]
        fragments[name] = fragment
    header = (
        "# Axolotl config fragments for this export, one per set: paste the one you train on.\n"
        "# openai and sharegpt hold the same conversations; alpaca the single-turn ones, rendered\n"
        "# with Axolotl's Alpaca prompt instead of the chat template.\n"
    )
    return header + yaml.dump(fragments, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=100)


class _PlainDumper(yaml.SafeDumper):
    """Writes shared mappings out in full: no &id001 anchors for a human to follow."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# --- dataset card ---------------------------------------------------------------------------

_SOURCE_SUFFIX = re.compile(r"[:#]\d+$")  # "path:line" or "path#row"
_CATALOGUES = ("README.md", "SOURCES.md")
_CATALOGUE_DEPTH = 4  # the file's folder and three above


def source_file(source: str) -> str:
    return _SOURCE_SUFFIX.sub("", source)


def licences(paths: Iterable[str]) -> dict[str, str]:
    """The licence a data catalogue near each file names for it, else "unknown".

    A catalogue is a README.md or SOURCES.md in the file's folder or one of the three above
    (like data/README.md) with a markdown table that has a file/path column and a licence column.
    """
    tables: dict[Path, list[tuple[str, str]]] = {}
    found = {}
    for shown in paths:
        path = Path(shown).resolve()
        found[shown] = "unknown"
        for folder in list(path.parents)[:_CATALOGUE_DEPTH]:
            if folder not in tables:
                tables[folder] = [e for name in _CATALOGUES for e in _catalogue_entries(folder / name)]
            relative = path.relative_to(folder).as_posix()
            match = next((licence for pattern, licence in tables[folder] if fnmatch(relative, pattern)), None)
            if match:
                found[shown] = match
                break
    return found


def _catalogue_entries(doc: Path) -> list[tuple[str, str]]:
    """(path pattern, licence) from the rows of the markdown tables in `doc` with a licence column."""
    if not doc.is_file():
        return []
    entries, columns = [], None
    for line in doc.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.lstrip().startswith("|"):
            columns = None  # a table ended
            continue
        cells = [c.strip().strip("`").strip() for c in line.strip().strip("|").split("|")]
        if columns is None:  # a table's first row is its header
            heads = [c.lower() for c in cells]
            licence = next((i for i, h in enumerate(heads) if "licen" in h), None)
            path = next((i for i, h in enumerate(heads) if h in ("file", "files", "path")), 0)
            columns = (path, licence)
        elif columns[1] is not None and len(cells) > max(columns) and not set("".join(cells)) <= set("-: "):
            entries.append((cells[columns[0]], cells[columns[1]]))
    return entries


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card(
    name: str,
    stats: dict[str, Any],
    result: StageResult,
    sets: dict[str, list[Row]],
    scores: dict[str, dict[str, float]],
    run_stats: dict[str, Any],
) -> str:
    """README.md of the export: sets and splits, token lengths, sources, curation, scores."""
    template = stats["chat_template"]
    rendering = "the tokenizer's own" if template == "tokenizer" else f"the `{template}`"
    parts = [
        f"# {name}: curated fine-tuning data",
        f"Rendered with {rendering} chat template and measured with the tokenizer `{stats['tokenizer']}`;"
        f" max_seq_length {stats['max_seq_length']}, overlength rows: {stats['overlength']}."
        " Train with the same template.",
        "## Sets",
        _table(
            ["file", "rows", "skipped (does not fit the format)"],
            ([file, e["rows"], e["skipped"]] for file, e in stats["files"].items()),
        ),
        _table(
            ["hf/ set", "train", "test", "note"],
            ([k, s.get("train", 0), s.get("test", 0), s.get("note", "")] for k, s in stats["splits"].items()),
        ),
    ]
    if stats["not_exported"]:
        kept = ", ".join(f"{n} {kind}" for kind, n in stats["not_exported"].items())
        parts.append(f"Kept but in no selected format: {kept}.")
    parts += [
        "## Token lengths",
        "Preference rows count the prompt with the longer answer.",
        _table(
            ["set", *_SUMMARY, "over max", "dropped (too_long)", "kept for truncation"],
            (
                [kind, *(t.get(k, "") for k in _SUMMARY)]
                + [t["over_max_seq_length"], t["dropped_too_long"], t["kept_for_truncation"]]
                for kind, t in stats["tokens"].items()
            ),
        ),
        "## Sources",
        _sources_table(sets),
        "## Curation",
        _curation_table(run_stats, result),
    ]
    if scores:
        parts += [
            "## Scores",
            _table(
                ["column", *_SUMMARY],
                ([column, *(s.get(k, "") for k in _SUMMARY)] for column, s in scores.items()),
            ),
        ]
    parts += [
        "## Loading",
        "- `datasets.load_from_disk(\"hf/sft\")`, `(\"hf/preference\")`: DatasetDicts for TRL"
        " (`messages`; `prompt`, `chosen`, `rejected` in the explicit conversational form)\n"
        "- LLaMA-Factory: copy the files and merge `dataset_info.json` into its data folder\n"
        "- Axolotl: `axolotl.yaml` has one config fragment per set",
    ]
    return "\n\n".join(parts) + "\n"


def _sources_table(sets: dict[str, list[Row]]) -> str:
    counts: dict[str, Counter[str]] = {}
    for kind, rows in sets.items():
        for row in rows:
            counts.setdefault(source_file(row["source"]), Counter())[kind] += 1
    found = licences(counts)
    kinds = sorted(sets)
    return _table(
        ["file", *kinds, "licence"],
        ([file, *(c[k] for k in kinds), found[file]] for file, c in sorted(counts.items())),
    )


def _curation_table(run_stats: dict[str, Any], result: StageResult) -> str:
    """Every stage of the run with what it removed, then this export's own rejects."""
    stages = [*run_stats.get("stages", []), result.stats(STAGE, result.kept.height + result.rejected.height)]
    rows = [[s["stage"], s["in"], s["out"], s["removed"], _reasons(s["removed_by_reason"])] for s in stages]
    return _table(["stage", "in", "out", "removed", "by reason"], rows)


def _reasons(by_reason: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in by_reason.items()) or "-"
