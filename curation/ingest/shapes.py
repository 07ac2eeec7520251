"""Shapes: an input row -> record drafts, one converter per dataset shape (ShareGPT, Alpaca,
OASST trees, ...), and the shape detected from a row's keys."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.config import INPUT_COLUMNS, InputShape

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


class Bad(Exception):
    """A row (or one conversation of it) that does not fit its shape."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(slots=True)
class Draft:
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
        raise Bad("missing_fields", ", ".join(missing))


def _wrong(where: str, value: Any, expected: str) -> Bad:
    return Bad("wrong_type", f"{where}: expected {expected}, got {type(value).__name__}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _wrong(where, value, "string")
    if not value.strip():
        raise Bad("empty_content", where)
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
            raise Bad("wrong_type", f"{where}[{j}]: unsupported content part {kind!r}")
        texts.append(_text(part.get("text"), f"{where}[{j}].text"))
    return "\n".join(texts)


def _turns(value: Any, where: str) -> list[_Turn]:
    """Turns in ShareGPT ({from, value}) or OpenAI ({role, content}) spelling."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise _wrong(where, value, "list of turns")
    if not value:
        raise Bad("empty_content", where)
    turns = []
    for i, turn in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(turn, dict):
            raise _wrong(at, turn, "object")
        role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
        _require(turn, role_key, text_key, at=at)
        role = _ROLES.get(turn[role_key]) if isinstance(turn[role_key], str) else None
        if role is None:
            raise Bad("wrong_type", f"{at}.{role_key}: unknown role {turn[role_key]!r}")
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


def _sft(row: dict, *turns: _Turn) -> list[Draft]:
    return [Draft("sft", messages=_system(row, list(turns)))]


def _shape_text(row: dict) -> list[Draft]:
    _require(row, "text")
    return [Draft("raw", text=_text(row["text"], "text"))]


def _shape_alpaca(row: dict) -> list[Draft]:
    _require(row, "instruction", "output")
    ask = _ask(row["instruction"], row.get("input"), "input")
    return _sft(row, *_history(row.get("history")), ask, _msg("assistant", row["output"], "output"))


def _history(value: Any) -> list[_Turn]:
    """LLaMA-Factory's Alpaca `history`: [[instruction, answer], ...] before the last turn."""
    if value is None or value == []:
        return []
    if not isinstance(value, list):
        raise _wrong("history", value, "list of [instruction, answer] pairs")
    turns = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise _wrong(f"history[{i}]", pair, "[instruction, answer]")
        turns += [_msg("user", pair[0], f"history[{i}][0]"), _msg("assistant", pair[1], f"history[{i}][1]")]
    return turns


def _shape_dolly(row: dict) -> list[Draft]:
    _require(row, "instruction", "response")
    ask = _ask(row["instruction"], row.get("context"), "context")
    return _sft(row, ask, _msg("assistant", row["response"], "response"))


def _shape_selfinstruct(row: dict) -> list[Draft]:
    """One conversation per instance; a bad instance is rejected alone."""
    _require(row, "instruction", "instances")
    instances = row["instances"]
    if not isinstance(instances, list):
        raise _wrong("instances", instances, "list")
    if not instances:
        raise Bad("empty_content", "instances")
    base = input_id(row)
    drafts = []
    for k, instance in enumerate(instances):
        at = f"instances[{k}]"
        draft = Draft("sft", id=None if base is None else f"{base}/{k}")
        try:
            if not isinstance(instance, dict):
                raise _wrong(at, instance, "object")
            _require(instance, "output", at=at)
            ask = _ask(row["instruction"], instance.get("input"), f"{at}.input")
            answer = _msg("assistant", instance["output"], f"{at}.output")
            draft.messages = _system(row, [ask, answer])
        except Bad as bad:
            draft.error = (bad.reason, bad.detail)
        drafts.append(draft)
    return drafts


def _shape_sharegpt(row: dict) -> list[Draft]:
    _require(row, "conversations")
    turns = _system(row, _turns(row["conversations"], "conversations"))
    if _has(row, "chosen", "rejected"):  # LLaMA-Factory's ShareGPT preference rows
        chosen, rejected = _turns(row["chosen"], "chosen"), _turns(row["rejected"], "rejected")
        return [Draft("preference", messages=turns, chosen=chosen, rejected=rejected)]
    return [Draft("sft", messages=turns)]


def _shape_messages(row: dict) -> list[Draft]:
    _require(row, "messages")
    return [Draft("sft", messages=_turns(row["messages"], "messages"))]


def _shape_prompt_response(row: dict) -> list[Draft]:
    for ask, answers in _PAIRS:
        if row.get(ask) is not None:
            answer = next((a for a in answers if row.get(a) is not None), None)
            if answer is None:
                raise Bad("missing_fields", "|".join(answers))
            return _sft(row, _msg("user", row[ask], ask), _msg("assistant", row[answer], answer))
    raise Bad("missing_fields", "|".join(ask for ask, _ in _PAIRS))


def _shape_questions(row: dict) -> list[Draft]:
    """Questions without answers (MT-Bench's `turns`): a raw record, one paragraph per turn."""
    turns = row["turns"]
    if not isinstance(turns, list) or not turns:
        raise _wrong("turns", turns, "non-empty list of strings")
    return [Draft("raw", text="\n\n".join(_text(turn, f"turns[{i}]").strip() for i, turn in enumerate(turns)))]


def _side(row: dict, key: str, role: str) -> list[_Turn]:
    value = row[key]
    return [_msg(role, value, key)] if isinstance(value, str) else _turns(value, key)


def _shape_preference(row: dict) -> list[Draft]:
    _require(row, "chosen", "rejected")
    chosen, rejected = _side(row, "chosen", "assistant"), _side(row, "rejected", "assistant")
    if row.get("prompt") is not None:
        prompt = _side(row, "prompt", "user")
    elif row.get("instruction") is not None:  # LLaMA-Factory's Alpaca-style ranking rows
        prompt = [_ask(row["instruction"], row.get("input"), "input")]
    else:
        prompt = []
    return [_pair(row, prompt, chosen, rejected, "prompt")]


def _pair(row: dict, prompt: list[_Turn], chosen: list[_Turn], rejected: list[_Turn], missing: str) -> Draft:
    """A preference draft; the head `chosen` and `rejected` share is context (TRL's implicit
    form, full conversations next to a prompt, HH-RLHF transcripts)."""
    common = 0
    while common < min(len(chosen), len(rejected)) - 1 and chosen[common] == rejected[common]:
        common += 1
    prompt = prompt or chosen[:common]
    if not prompt:
        raise Bad("missing_fields", missing)
    return Draft("preference", messages=_system(row, prompt), chosen=chosen[common:], rejected=rejected[common:])


# Anthropic HH-RLHF transcripts: "\n\nHuman: ... \n\nAssistant: ..." in one string.
_HH_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_HH_KEYS = ("chosen", "rejected", "transcript", "text")


def _is_hh(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip("\n").startswith("Human:") and "\n\nAssistant:" in value


def _looks_hh(row: dict) -> bool:
    return any(_is_hh(row.get(k)) for k in _HH_KEYS)


def _hh_turns(value: Any, where: str) -> list[_Turn]:
    text = _text(value, where)
    parts = _HH_SPEAKER.split(text.lstrip("\n"))
    if parts[0].strip() or len(parts) < 3:
        raise Bad("wrong_type", f"{where}: not a '\\n\\nHuman: ... \\n\\nAssistant: ...' transcript")
    turns = zip(parts[1::2], parts[2::2], strict=True)  # the split alternates speaker, words
    return [_msg(_HH_ROLES[who], said.strip(), f"{where} turn {i}") for i, (who, said) in enumerate(turns)]


def _shape_hh_rlhf(row: dict) -> list[Draft]:
    """chosen/rejected transcripts -> a preference pair (the shared turns are the prompt); one
    transcript (red-team `transcript`, or `text`) -> a conversation."""
    if _has(row, "chosen", "rejected"):
        chosen, rejected = _hh_turns(row["chosen"], "chosen"), _hh_turns(row["rejected"], "rejected")
        return [_pair(row, [], chosen, rejected, "chosen/rejected: no shared Human turn")]
    key = "transcript" if row.get("transcript") is not None else "text"
    _require(row, key)
    return _sft(row, *_hh_turns(row[key], key))


def _shape_openai_dpo(row: dict) -> list[Draft]:
    _require(row, "input", "preferred_output", "non_preferred_output")
    if not isinstance(row["input"], dict):
        raise _wrong("input", row["input"], "object")
    _require(row["input"], "messages", at="input")
    return [
        Draft(
            "preference",
            messages=_turns(row["input"]["messages"], "input.messages"),
            chosen=_turns(row["preferred_output"], "preferred_output"),
            rejected=_turns(row["non_preferred_output"], "non_preferred_output"),
        )
    ]


def _shape_oasst(row: dict) -> list[Draft]:
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
        draft = Draft("sft", id=ids[-1], meta=meta)
        try:
            draft.messages = [_oasst_turn(node, at) for node, at in path]
        except Bad as bad:
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
        raise Bad("wrong_type", f"{at}.role: unknown role {node['role']!r}")
    return _msg(role, node["text"], f"{at}.text")


def _oasst_moderated(path: list[tuple[dict, str]]) -> tuple[str, str] | None:
    deleted = [f"{at} ({n.get('message_id')})" for n, at in path if n.get("deleted")]
    if deleted:
        return "oasst_deleted", deleted[0]
    failed = [f"{at} ({n.get('message_id')})" for n, at in path if n.get("review_result") is False]
    return ("oasst_review_failed", failed[0]) if failed else None


class _Shape(NamedTuple):
    convert: Callable[[dict], list[Draft]]
    signatures: tuple[tuple[str, ...], ...]  # a row fits when it has every key of one of these
    uses: frozenset[str]  # keys the shape consumes; the rest of the row goes to meta
    test: Callable[[dict], bool] | None = None  # and, when set, when its values pass this

    def fits(self, row: dict) -> bool:
        return any(_has(row, *keys) for keys in self.signatures) and (self.test is None or self.test(row))


def _shape(
    convert: Callable[[dict], list[Draft]],
    signatures: list[tuple[str, ...]],
    *uses: str,
    test: Callable[[dict], bool] | None = None,
) -> _Shape:
    used = {key for keys in signatures for key in keys} | {*uses, *_ID_KEYS}
    return _Shape(convert, tuple(signatures), frozenset(used), test)


# Detection tries these in order, so the more specific signatures come first.
SHAPES: dict[str, _Shape] = {
    "hh_rlhf": _shape(_shape_hh_rlhf, [("chosen", "rejected"), ("transcript",), ("text",)], test=_looks_hh),
    "oasst": _shape(_shape_oasst, [("message_tree_id", "prompt")]),
    "openai_dpo": _shape(
        _shape_openai_dpo, [("preferred_output", "non_preferred_output")], "input"
    ),
    "sharegpt": _shape(_shape_sharegpt, [("conversations",)], "system", "chosen", "rejected"),
    "messages": _shape(_shape_messages, [("messages",)]),
    "selfinstruct": _shape(_shape_selfinstruct, [("instruction", "instances")], "system"),
    "preference": _shape(_shape_preference, [("chosen", "rejected")], "prompt", "instruction", "input", "system"),
    "alpaca": _shape(_shape_alpaca, [("instruction", "output")], "input", "system", "history"),
    "dolly": _shape(_shape_dolly, [("instruction", "response")], "context", "system"),
    "prompt_response": _shape(
        _shape_prompt_response, [(ask, a) for ask, answers in _PAIRS for a in answers], "system"
    ),
    "questions": _shape(_shape_questions, [("turns",)]),
    "text": _shape(_shape_text, [("text",)]),
}


def detect_shape(row: dict) -> str | None:
    return next((name for name, shape in SHAPES.items() if shape.fits(row)), None)


def fits_shape(row: dict, shape: InputShape) -> bool:
    return detect_shape(row) is not None if shape == "auto" else SHAPES[shape].fits(row)


def input_id(row: dict) -> str | None:
    return next((str(row[k]) for k in _ID_KEYS if row.get(k) not in (None, "")), None)


def map_columns(row: dict, columns: dict[str, str]) -> dict:
    """The row with the configured columns under the keys the shapes read (`columns:` maps
    LLaMA-Factory's names to the input's column names); other columns stay as they are."""
    if not columns:
        return row
    sources = set(columns.values())
    mapped = {k: v for k, v in row.items() if k not in sources}
    mapped.update({INPUT_COLUMNS[name]: row[column] for name, column in columns.items() if column in row})
    return mapped
