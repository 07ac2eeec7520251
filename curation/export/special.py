"""The tokenizer's special tokens inside the data: rejected, or escaped so they stay plain text.

A turn that holds `<|im_start|>system` renders through the chat template as a real special
token and opens a turn of its own: role injection through data. The tokens looked for are the
ones the training tokenizer declares special (the chat template's markers, end, padding and
other control tokens: `<|im_start|>`, `[INST]`, `<|eot_id|>`, `<s>`, as that tokenizer has them),
in every turn of the conversation, the preference prompt and both answers.

`export.special_tokens: reject` (the default) makes such a record a reject `special_token`;
`escape` puts a zero-width space after each such token's first character, so the text reads the
same but tokenizes as plain text. An escaped turn is tokenized to check that no special token id
is left; one that still yields one (a one-character token cannot be broken) is rejected.
"""

from __future__ import annotations

import re

from transformers import PreTrainedTokenizerBase

from curation.export.checks import Messages
from curation.export.render import Checked
from schemas.export import SpecialTokenAction
from schemas.figures import SpecialTokenFigures

REASON = "special_token"
ESCAPE = "\u200b"  # zero-width space
SIDES = ("messages", "chosen", "rejected")


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Each special token's text and id: the added tokens marked special, and the named ones
    (bos, eos, pad, ...) wherever they come from."""
    found = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    found |= dict(zip(tokenizer.all_special_tokens, tokenizer.all_special_ids, strict=True))
    return {text: i for text, i in found.items() if text.strip()}


class SpecialTokens:
    """Finds the tokenizer's special tokens in records and rejects or escapes them."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, action: SpecialTokenAction) -> None:
        self.tokenizer, self.action = tokenizer, action
        tokens = special_tokens(tokenizer)
        self.ids = set(tokens.values())
        # Longest first: a token that holds another (`<|im_start|>` vs `<`) is matched whole.
        alternatives = sorted(tokens, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None
        self.records = 0  # records that held one
        self.escaped = 0

    def check(self, item: Checked) -> None:
        """Reject the record or escape its turns (in item.row) when a turn holds a special token."""
        if self.pattern is None:
            return
        found = [(side, i, turn, match.group(0)) for side in SIDES for i, turn in enumerate(item.row[side] or [])
                 if (match := self.pattern.search(turn["content"] or ""))]
        if not found:
            return
        self.records += 1
        side, i, turn, token = found[0]
        where = f"{_side_name(item.row['kind'], side)} turn {i} ({turn['role']})"
        more = f" (and {len(found) - 1} more turns)" if len(found) > 1 else ""
        if self.action == "reject":
            item.reject(REASON, f"{where} holds the tokenizer's special token {token!r}{more}")
            return
        escaped = {side: self._escape(item.row[side]) for side in SIDES if item.row[side]}
        if any(self._has_special_id(t["content"]) for turns in escaped.values() for t in turns):
            item.reject(REASON, f"{where}: {token!r} still tokenizes as a special token once escaped")
            return
        item.row.update(escaped)
        self.escaped += 1

    def _escape(self, turns: Messages) -> Messages:
        assert self.pattern is not None
        return [{**t, "content": self.pattern.sub(lambda m: m.group(0)[0] + ESCAPE + m.group(0)[1:], t["content"])}
                for t in turns]

    def _has_special_id(self, text: str) -> bool:
        return not self.ids.isdisjoint(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def figures(self) -> SpecialTokenFigures:
        return SpecialTokenFigures(action=self.action, records=self.records, escaped=self.escaped)


def _side_name(kind: str, side: str) -> str:
    if side == "messages":
        return "prompt" if kind == "preference" else "conversation"
    return side
