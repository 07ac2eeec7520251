"""The exported files' row shapes (Alpaca, ShareGPT, OpenAI messages, TRL preference,
LLaMA-Factory ranking pairs) and how rows are written as JSON or JSON lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from curation.export.checks import Messages, Row
from schemas.export import ExportFormat

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
HF_ROWS: dict[str, Formatter] = {"sft": _openai, "preference": _preference}  # TRL's column shapes


def outputs_of(formats: list[ExportFormat]) -> list[tuple[str, str, Formatter]]:
    """(file, the set it draws from, row formatter) per file; preference adds LLaMA-Factory's."""
    outputs = [(FILES[f], FORMAT_KIND[f], _FORMATTERS[f]) for f in formats]
    if "preference" in formats:
        outputs.append((LLAMAFACTORY_PREFERENCE, "preference", _llamafactory_pair))
    return outputs


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """A JSON array (.json, what LLaMA-Factory's examples use) or JSON lines (.jsonl)."""
    if path.suffix == ".jsonl":
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    else:
        write_json(path, rows)


def write_json(path: Path, value: Any) -> None:
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
