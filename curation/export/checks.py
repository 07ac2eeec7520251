"""The rules an exported record must follow: alternating roles, no empty turns, a fitting last
turn, distinct preference answers. Each broken rule is a reject reason of stage "export"."""

from __future__ import annotations

from typing import Any

STAGE = "export"
Messages = list[dict[str, str]]
Row = dict[str, Any]  # a record as `DataFrame.to_dicts()` gives it


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
