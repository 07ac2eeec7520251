"""How a record renders through the chat template, how many tokens that is, and which records
are too long for max_seq_length."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from curation.export.checks import Messages, Row
from schemas.export import ExportConfig

_TOKENIZE_BATCH = 1000


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
class Checked:
    """A record of an exported kind: why it cannot be exported, or how long it renders."""

    row: Row
    reason: str | None = None
    detail: str | None = None
    tokens: int | None = None  # the longest of its trained conversations
    truncated: bool = False  # over max_seq_length, kept to be cut at train time

    def reject(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def measure(checked: list[Checked], tokenizer: PreTrainedTokenizerBase, cfg: ExportConfig) -> None:
    """Render and count every structurally valid record, then settle the ones over the limit."""
    texts: list[str] = []
    owners: list[Checked] = []
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
