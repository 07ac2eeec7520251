"""The decision benchmark's labelled sets (bench/decisions): present, well-formed, both sides of
every rule there, and judged by the real stages."""

from __future__ import annotations

import json

import pytest

from bench.bench_decisions import DECISIONS, FIELDS, LABELS, SETS, judge, load, score


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_set_holds_labelled_items_of_both_sides(name: str) -> None:
    items = load(name)
    ids = [it["id"] for it in items]
    assert len(ids) == len(set(ids)), "ids are unique"
    for it in items:
        assert FIELDS <= it.keys(), it["id"]
        assert it["label"] in LABELS, it["id"]
        assert it["reason"] == SETS[name]["reason"], it["id"]
        assert it["origin"].strip() and it["group"].strip(), it["id"]
        # A document, or a prompt with its answer.
        assert ("text" in it) != ("answer" in it), it["id"]
        assert (it.get("text") or it.get("answer") or "").strip(), it["id"]
        if name == "pii" and it["label"] == "remove":
            assert it["planted"] in it["text"], it["id"]
    sides = {label: sum(it["label"] == label for it in items) for label in LABELS}
    assert min(sides.values()) >= 30, sides  # both what the rule must remove and near misses it must keep


def test_every_set_on_disk_is_benchmarked() -> None:
    assert {p.stem for p in DECISIONS.glob("*.jsonl")} == set(SETS)
    baseline = json.loads((DECISIONS / "baseline.json").read_text())["sets"]
    assert set(baseline) == set(SETS)


def test_the_real_stages_judge_a_sample(tmp_path) -> None:
    """A few items of two sets through ingest and the stages: the labels line up with records."""
    refusals = [it for it in load("keywords_refusals") if "as an ai language model" in it["answer"].lower()][:3]
    mentions = [it for it in load("keywords_refusals") if it["label"] == "keep"][:3]
    outcome = judge("keywords_refusals", refusals + mentions)
    assert all(outcome[it["id"]]["removed"] for it in refusals)
    assert all(outcome[it["id"]]["reasons"] in ([], ["excluded_keyword"]) for it in mentions)
    figures = score(refusals + mentions, outcome)
    assert figures["n_remove"] == 3 and figures["recall"] == 1.0
    planted = [it for it in load("pii") if it["label"] == "remove" and it["kind"] == "email"][:3]
    assert all(judge("pii", planted)[it["id"]]["removed"] for it in planted)


def test_placeholder_set_is_judged_by_the_default_check() -> None:
    """The placeholders set names the check that is on by default; other sets run without it."""
    items = load("placeholders")
    sample = [next(it for it in items if it["group"] == g) for g in
              ("empty_like_real", "placeholder_token", "leaked_generation_template", "input_output_examples",
               "short_real_answer", "instructions_heading")]
    outcome = judge("placeholders", sample)
    assert [outcome[it["id"]]["reasons"] for it in sample] == [
        ["placeholder_answer"], ["placeholder_answer"], ["leaked_template"], [], [], []]
    # In another set's run the check is off: a "<noinput>" answer is only judged for its language.
    assert judge("language", [{**sample[1], "label": "keep"}])[sample[1]["id"]]["removed"] is False

