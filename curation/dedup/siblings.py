"""Preference-safe dedup: sibling answers to one prompt are candidates for a pair, not duplicates.

When the run builds preference pairs from the answers in the data (`preference.candidates.existing`),
the pair builder (curation.preference.pairs.group_prompts) gathers, per prompt, the final answers
of the sft records that share it: the prompt is the turns before the last assistant turn (it
must end with a user turn) and answers equal once stripped are one candidate. A record is a
*sibling* when its prompt has at least two such distinct answers (oasst replies to one message,
two models' outputs for one instruction). Every dedup stage (exact, MinHash, semantic,
published-version) applies the same rule: the earliest record of each distinct (prompt, answer)
of a sibling group is protected and never removed by that stage; it may still be another
record's `duplicate_of` target. A second copy of the same answer to the same prompt is not
protected: the pair builder would merge it anyway.

Per partition (on the stage's engine) only two 8-byte hashes per candidate record come back:
its prompt turns and its stripped final answer. The corpus-wide grouping is a sort of those.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from curation.core.corpus import Source
from curation.core.engine import Engine, LocalEngine

HASH_SEED = 0x51B
_ROLE, _TURN = "\x1f", "\x1e"  # separators inside a hashed prompt (control characters: not in text)


def sibling_keys(part: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of `part` that are candidate answers (sft, a prompt ending with a user turn), and the
    hashes of their prompt turns and of their stripped last assistant answer."""
    messages = pl.col("messages")
    roles = messages.list.eval(pl.element().struct.field("role"))
    last = roles.list.len() - 1 - roles.list.reverse().list.eval(pl.element() == "assistant").list.arg_max()
    turns = messages.list.head(last).list.eval(
        pl.element().struct.field("role") + _ROLE + pl.element().struct.field("content")
    )
    keys = (
        part.lazy()
        .select(
            candidate=(pl.col("kind") == "sft")
            & (last > 0)
            & (messages.list.get(last - 1, null_on_oob=True).struct.field("role") == "user"),
            prompt=turns.list.join(_TURN).hash(HASH_SEED),
            answer=messages.list.get(last, null_on_oob=True).struct.field("content").str.strip_chars().hash(HASH_SEED),
        )
        .collect()
    )
    rows = np.flatnonzero(keys["candidate"].fill_null(False).to_numpy())
    return rows, keys["prompt"].to_numpy()[rows], keys["answer"].to_numpy()[rows]


def protected_rows(records: Source, engine: Engine | None = None) -> np.ndarray:
    """Sorted rows of the sibling records dedup must keep (see the module docstring)."""
    engine = engine or LocalEngine()
    parts = engine.map(sibling_keys, records, "preference siblings")
    starts = engine.starts(records)
    rows = np.concatenate([np.empty(0, np.int64)] + [r + s for (r, _, _), s in zip(parts, starts, strict=True)])
    prompt = np.concatenate([np.empty(0, np.uint64)] + [p for _, p, _ in parts])
    answer = np.concatenate([np.empty(0, np.uint64)] + [a for _, _, a in parts])
    del parts
    order = np.lexsort((rows, answer, prompt))  # by prompt, then answer, then input order
    rows, prompt, answer = rows[order], prompt[order], answer[order]
    new_prompt = np.ones(len(rows), bool)
    new_prompt[1:] = prompt[1:] != prompt[:-1]
    new_answer = new_prompt.copy()
    new_answer[1:] |= answer[1:] != answer[:-1]  # the earliest record of each (prompt, answer)
    group = np.cumsum(new_prompt) - 1
    distinct = np.bincount(group, weights=new_answer) if len(rows) else np.zeros(0)
    return np.sort(rows[new_answer & (distinct[group] >= 2)])


def spare_siblings(records: Source, root: np.ndarray, engine: Engine | None = None) -> tuple[np.ndarray, int]:
    """`root` (row i is a duplicate of row root[i] unless root[i] == i) with every protected row
    kept (in place when it is writable), and how many of them it would have removed. The rows they
    pointed at stay kept, so every other duplicate still names a kept record."""
    rows = protected_rows(records, engine)
    spared = rows[root[rows] != rows]
    if len(spared):
        root = root if root.flags.writeable else root.copy()
        root[spared] = spared
    return root, len(spared)
