"""Dedup stages on real paragraphs from tests/fixtures/raw with planted duplicates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.core.corpus import CorpusWriter
from curation.core.run import run_pipeline
from curation.core.stage import StageResult
from curation.dedup import build_exact_stage, build_minhash_stage, build_semantic_stage
from curation.dedup.common import earliest_roots
from curation.dedup.minhash import ShingleSets, permutations, shingle_hashes, signatures
from curation.dedup.semantic import greedy_duplicates
from curation.dedup.siblings import protected_rows
from curation.dedup.verify import different_task
from schemas.config import CurateConfig, ExactDedup, MinHashDedup, SemanticDedup
from schemas.record import RECORD_SCHEMA, REJECT_SCHEMA, records_frame

SOURCES = [
    "state_union/1961-Kennedy.txt",
    "state_union/2005-GWBush.txt",
    "gutenberg/austen-emma.txt",
    "gutenberg/melville-moby_dick.txt",
    "gutenberg/chesterton-brown.txt",
    "gutenberg/whitman-leaves.txt",
    "gutenberg/shakespeare-hamlet.txt",
    "peps/pep-0008.rst",
    "peps/pep-0484.rst",
    "peps/pep-0572.rst",
]


@pytest.fixture(scope="module")
def paragraphs(public_data: Path) -> list[str]:
    """Two long distinct paragraphs (80-300 words) from each of ten different real texts."""
    found = []
    for name in SOURCES:
        text = (public_data / "raw" / name).read_text(encoding="utf-8", errors="replace")
        paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
        found += [p for p in paras if 80 <= len(p.split()) <= 300 and "::" not in p][:2]
    assert len(found) == 2 * len(SOURCES)
    return found


def row(doc_id: str, kind: str, **fields) -> dict:
    empty = {"text": None, "messages": None, "chosen": None, "rejected": None}
    return {"id": doc_id, "source": f"test#{doc_id}", "kind": kind, **empty, **fields, "meta": "{}"}


def frame(texts: list[str | None]) -> pl.DataFrame:
    return records_frame([row(f"r{i}", "raw", text=t) for i, t in enumerate(texts)])


def conversation(i: int, user: str, answer: str, kind: str = "sft") -> dict:
    def turn(role: str, content: str) -> list[dict]:
        return [{"role": role, "content": content}]

    if kind == "sft":
        return row(f"c{i}", kind, messages=turn("user", user) + turn("assistant", answer))
    prompt, chosen, rejected = turn("user", user), turn("assistant", answer), turn("assistant", "No.")
    return row(f"c{i}", kind, messages=prompt, chosen=chosen, rejected=rejected)


def check(records: pl.DataFrame, result: StageResult) -> dict[str, str]:
    """The contract every dedup result meets; returns {removed id: duplicate_of}."""
    assert result.kept.height + result.rejected.height == records.height
    assert result.kept.columns == list(RECORD_SCHEMA)
    assert result.rejected.columns == list(REJECT_SCHEMA)
    order = {doc_id: i for i, doc_id in enumerate(records["id"])}
    kept = result.kept["id"].to_list()
    assert [order[k] for k in kept] == sorted(order[k] for k in kept)  # input order kept
    removed = dict(zip(result.rejected["id"], result.rejected["duplicate_of"], strict=True))
    for doc_id, original in removed.items():
        assert original in kept and order[original] < order[doc_id]
    assert result.rejected["detail"].null_count() == 0
    return removed


def run_twice(stage, records: pl.DataFrame) -> StageResult:
    first, second = stage(records), stage(records)
    assert first.kept.equals(second.kept) and first.rejected.equals(second.rejected)
    return first


# --- exact ----------------------------------------------------------------------------------


def test_exact_finds_normalisation_variants(paragraphs: list[str]) -> None:
    p = paragraphs
    variants = [
        p[2].upper(),
        "  " + p[2].replace(" ", "\n\t ", 5) + "\n",
        re.sub(r"[,.;:!?]", "", p[2]),
        p[2].replace(" ", " , ", 3).replace("e", "e\u2019", 1),  # unicode punctuation too
    ]
    texts = [p[0], p[1], p[2], *variants, p[3], p[5].lower(), p[5], p[4]]
    records = frame(texts)
    result = run_twice(build_exact_stage(ExactDedup()), records)
    removed = check(records, result)
    assert removed == {"r3": "r2", "r4": "r2", "r5": "r2", "r6": "r2", "r9": "r8"}
    assert set(result.rejected["reason"]) == {"exact_duplicate"}


def test_exact_without_normalisation_needs_equal_text(paragraphs: list[str]) -> None:
    records = frame([paragraphs[0], paragraphs[0].upper(), paragraphs[0]])
    removed = check(records, build_exact_stage(ExactDedup(normalize=[]))(records))
    assert removed == {"r2": "r0"}


# --- minhash --------------------------------------------------------------------------------


def edit(text: str, positions: list[int], word: str = "zebra") -> str:
    words = text.split()
    for i in positions:
        words[i] = word
    return " ".join(words)


def test_minhash_finds_near_duplicates_and_verifies(paragraphs: list[str]) -> None:
    long = max(paragraphs, key=lambda t: len(t.split()))
    p = [t for t in paragraphs if t != long]
    n = len(long.split())
    near_a = edit(long, [10, 60])
    near_b = " ".join(long.split()[:-3]) + " and so on"  # another ending
    mid = edit(long, list(range(5, n, 30)))  # Jaccard ~0.7: an LSH candidate, not a duplicate
    texts = [p[0], near_a, p[1], long, near_b, mid, *p[2:8], long.upper()]
    records = frame(texts)
    result = run_twice(build_minhash_stage(MinHashDedup(), progress=False), records)
    removed = check(records, result)
    assert removed == {"r3": "r1", "r4": "r1", "r12": "r1"}
    assert set(result.rejected["reason"]) == {"near_duplicate"}
    assert all(0.8 <= float(d.removeprefix("jaccard ")) < 1 for d in result.rejected["detail"])
    # Unverified, every LSH candidate pair is a duplicate: a superset.
    unverified = check(records, build_minhash_stage(MinHashDedup(verify=False), progress=False)(records))
    assert removed.items() <= unverified.items()


def test_minhash_pairs_grow_linearly_with_one_big_cluster(paragraphs: list[str]) -> None:
    # 3000 distinct documents, all near duplicates (Jaccard ~0.9): every band puts most of them
    # in one bucket. Each is compared with about one other, not with the window of every band.
    words = paragraphs[0].split()[:80]
    texts = [" ".join([*words, "item", str(i)]) for i in range(3000)]
    records = frame(texts)
    result = build_minhash_stage(MinHashDedup(), progress=False)(records)
    assert check(records, result) == {f"r{i}": "r0" for i in range(1, 3000)}
    assert result.figures.candidate_pairs < 2 * len(texts)
    assert result.figures.confirmed_pairs == len(texts) - 1


def test_clusters_keep_their_earliest_row() -> None:
    left, right = np.array([5, 3, 9, 7, 2]), np.array([3, 9, 1, 8, 2])  # a chain, a pair, a loop
    assert earliest_roots(10, left, right).tolist() == [0, 1, 2, 1, 4, 1, 6, 7, 7, 1]


def test_minhash_jaccard_matches_python_sets(paragraphs: list[str]) -> None:
    texts = [*paragraphs[:6], edit(paragraphs[0], [5]), "One two", "one, TWO!", "", "...", "a b c d e"]
    series = pl.Series(texts)

    def shingles(text: str) -> set[str]:
        words = re.findall(r"\w+", text.lower())
        grams = {" ".join(words[i : i + 5]) for i in range(len(words) - 4)}
        return grams or ({" ".join(words)} if words else set())

    counts, _ = shingle_hashes(series, 5)
    words = [len(re.findall(r"\w+", t)) for t in texts]
    assert counts.tolist() == [max(w - 4, min(w, 1)) for w in words]
    rows = np.arange(len(texts))
    left, right = np.repeat(rows, len(rows)), np.tile(rows, len(rows))
    got = ShingleSets(series, rows, 5).jaccard(left, right)
    for i, j, value in zip(left, right, got, strict=True):
        a, b = shingles(texts[i]), shingles(texts[j])
        assert value == pytest.approx(len(a & b) / len(a | b) if a | b else 0.0)


def test_minhash_signatures_estimate_jaccard(paragraphs: list[str]) -> None:
    long = max(paragraphs, key=lambda t: len(t.split()))
    texts = [long, edit(long, [20]), edit(long, list(range(0, len(long.split()), 25))), paragraphs[0]]
    series = pl.Series(texts)
    docs, sigs = signatures(series, 5, permutations(256), progress=False)
    sets = ShingleSets(series.gather(docs), docs, 5)
    for j in range(1, 4):
        estimate = (sigs[:, 0] == sigs[:, j]).mean()
        assert estimate == pytest.approx(sets.jaccard(np.array([0]), np.array([j]))[0], abs=0.1)


# --- semantic -------------------------------------------------------------------------------

# Per encoder: these paraphrases score 0.81-0.85 with the static model (the real paragraphs at most
# ~0.69), 0.90-0.94 with the MiniLM transformer (the paragraphs at most ~0.6).
THRESHOLDS = {"minilm-static": 0.78, "all-MiniLM-L6-v2": 0.85}
THRESHOLD = THRESHOLDS["minilm-static"]

PARAPHRASES = [
    (
        "The city council approved the new budget on Tuesday, raising spending on public schools.",
        "On Tuesday the municipal council passed the new budget, which increases funding for state schools.",
    ),
    (
        "The train to Boston was cancelled because of the heavy snow.",
        "Heavy snowfall led to the cancellation of the Boston train.",
    ),
    (
        "To install the package, run pip install followed by the package name in a terminal.",
        "You can install the package by typing pip install and then its name in your terminal.",
    ),
]


@pytest.fixture(scope="module")
def semantic_stage():
    return build_semantic_stage(SemanticDedup(threshold=THRESHOLD), progress=False)


@pytest.mark.parametrize("model", list(THRESHOLDS))
def test_semantic_finds_paraphrases(paragraphs: list[str], model: str) -> None:
    (a1, a2), (b1, b2), (c1, c2) = PARAPHRASES
    p = paragraphs[::2]  # one per source: embedding long paragraphs is the slow part
    texts = [p[0], a1, b2, p[1], p[2], p[3], a2, c1, b1, p[4], c2, *p[5:]]
    records = frame(texts)
    stage = build_semantic_stage(SemanticDedup(threshold=THRESHOLDS[model], model=model), progress=False)
    result = run_twice(stage, records)
    removed = check(records, result)
    assert removed == {"r6": "r1", "r8": "r2", "r10": "r7"}
    assert set(result.rejected["reason"]) == {"semantic_duplicate"}
    assert all(float(d.removeprefix("cosine ")) >= THRESHOLDS[model] for d in result.rejected["detail"])


# Pairs of instructions that share almost every word (issue 23): the first two of each are from
# ../shared/data/sft/code_alpaca_2k.json, the swaps are written here.
DIFFERENT_TASKS = {
    "direction": ("Design a function to convert a temperature in Celsius to Fahrenheit.",
                  "Create a function to convert a Fahrenheit temperature to Celsius."),
    "antonym": ("Sort the given integer array in ascending order.",
                "Sort the given integer array in descending order."),
}
SAME_TASK = ("Create a function to convert a Fahrenheit temperature to Celsius.",
             "Write a function to convert Fahrenheit to Celsius")


@pytest.mark.parametrize("kind", list(DIFFERENT_TASKS))
def test_semantic_keeps_pairs_whose_differing_words_change_the_task(kind: str) -> None:
    records = frame(list(DIFFERENT_TASKS[kind]))
    assert check(records, build_semantic_stage(SemanticDedup(), progress=False)(records)) == {}
    # The cosine alone (verify: false) merges them: the check is what keeps them.
    assert check(records, build_semantic_stage(SemanticDedup(verify=False), progress=False)(records)) == {"r1": "r0"}


def test_semantic_verify_still_removes_paraphrases() -> None:
    records = frame(list(SAME_TASK))
    result = build_semantic_stage(SemanticDedup(), progress=False)(records)
    assert check(records, result) == {"r1": "r0"}
    assert result.figures.kept_as_different_task == {}


def test_semantic_verify_removes_a_paraphrase_of_a_record_it_kept() -> None:
    # r2 rewords r1; both are closest to r0, the reverse conversion, and are kept apart from it:
    # the records kept that way are then deduplicated among themselves.
    celsius, fahrenheit = DIFFERENT_TASKS["direction"]
    records = frame([celsius, fahrenheit, SAME_TASK[1]])
    result = build_semantic_stage(SemanticDedup(), progress=False)(records)
    assert check(records, result) == {"r2": "r1"}
    assert result.figures.kept_as_different_task == {"direction": 1}
    assert float(result.rejected["detail"][0].removeprefix("cosine ")) >= 0.9


def test_semantic_keeps_the_same_task_in_two_programming_languages(public_data: Path) -> None:
    # Two recursive factorials of GPTeacher's Codegen set, one asked and answered in Python, one in JavaScript.
    data = json.loads((public_data / "sft" / "gpteacher_codegen_instruct.json").read_text())
    python, javascript = data[380], data[210]
    assert "def factorial" in python["response"] and "function factorial" in javascript["response"]
    records = records_frame([conversation(i, r["instruction"], r["response"]) for i, r in enumerate((python, javascript))])
    result = build_semantic_stage(SemanticDedup(), progress=False)(records)
    assert check(records, result) == {}
    assert result.figures.kept_as_different_task == {"language": 1}
    assert check(records, build_semantic_stage(SemanticDedup(verify=False), progress=False)(records)) == {"c1": "c0"}


def test_semantic_decisions_do_not_depend_on_how_many_pairs_are_verified_at_once(
    public_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 952 real instructions (GPTeacher Codegen, Self-Instruct, GSM8K) with the planted task changes
    # after them, searched by the IVF index (small blocks, so it takes over early); verify reads
    # its pairs a few at a time or all at once.
    from curation.dedup import semantic

    sft = public_data / "sft"
    code = [r["instruction"] for r in json.loads((sft / "gpteacher_codegen_instruct.json").read_text())]
    lines = [json.loads(line) for name in ("selfinstruct_user_oriented_252.jsonl", "gsm8k_test.jsonl")
             for line in (sft / name).read_text().splitlines()]
    celsius, fahrenheit = DIFFERENT_TASKS["direction"]
    planted = [*DIFFERENT_TASKS["antonym"], celsius, fahrenheit, SAME_TASK[1]]
    records = frame(code + [r.get("instruction") or r["question"] for r in lines] + planted)
    monkeypatch.setattr(semantic, "BLOCK_ROWS", 128)
    stage = build_semantic_stage(SemanticDedup(search="ivf"), progress=False)
    monkeypatch.setattr(semantic, "VERIFY_PAIRS", 3)
    chunked = stage(records)
    monkeypatch.setattr(semantic, "VERIFY_PAIRS", records.height)
    whole = stage(records)
    assert chunked.kept.equals(whole.kept) and chunked.rejected.equals(whole.rejected)
    assert chunked.figures == whole.figures and whole.figures.search.startswith("exact, then ivf from ")
    assert whole.figures.kept_as_different_task["direction"] >= 1 and len(check(records, whole)) > 10


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("Write a program to find the maximum of two numbers.", "Write a program to find the average of four numbers.",
         "contrast"),
        ("Find the largest element of the list.", "Find the maximum element of the list.", None),
        ("Print all odd numbers from 1 to 10.", "Print all odd numbers from 4 to 10.", "numbers"),
        ("Print the numbers from 1 to 10.", "Print the numbers from 1 to 10 in 2024.", None),
        ("Convert a given number from binary to decimal.", "Convert a given number from decimal to binary.",
         "direction"),
        ("Reverse a string in Python.", "Reverse a string in JavaScript.", "language"),
    ],
)
def test_different_task_names_what_changes_the_task(a: str, b: str, why: str | None) -> None:
    assert different_task(a, b) == why and different_task(b, a) == why


# --- all stages -----------------------------------------------------------------------------


def test_semantic_duplicates_point_at_kept_records() -> None:
    # b is close to a, c is close to b but not to a: b goes, c stays (b is no longer kept). The
    # last one is within reach of a and c: it names the closer, c.
    def at(degrees: float) -> list[float]:
        return [np.cos(np.radians(degrees)), np.sin(np.radians(degrees))]

    embeddings = np.array([at(0), at(20), at(40), at(5), at(22)], np.float32)
    kept_as, cosine = greedy_duplicates(embeddings, threshold=float(np.cos(np.radians(25))))
    assert kept_as.tolist() == [0, 0, 2, 0, 2]
    assert cosine[1] == pytest.approx(np.cos(np.radians(20)))
    assert cosine[4] == pytest.approx(np.cos(np.radians(18)))


def test_views_pick_the_compared_turns() -> None:
    # Short turns: a long one would fill the embedding model's 256-token window on its own.
    question = "What causes the seasons on Earth?"
    answer = "The tilt of the Earth's axis changes how directly sunlight reaches each hemisphere."
    rows = [
        conversation(0, question, answer),
        conversation(1, question, "Bake the bread for forty minutes until the crust turns golden brown."),
        conversation(2, "Can you recommend a good book about medieval history?", answer),
        conversation(3, question, answer, kind="preference"),
        conversation(4, "How do I sort a list of numbers in Python?", answer, kind="preference"),
    ]
    records = records_frame(rows)
    builders = [
        lambda view: build_exact_stage(ExactDedup(view=view)),
        lambda view: build_minhash_stage(MinHashDedup(view=view), progress=False),
        # 0.86: conversations that share only their answer score up to 0.83 in the view "all".
        lambda view: build_semantic_stage(SemanticDedup(threshold=0.86, view=view), progress=False),
    ]
    for build in builders:
        name = build("all").name
        assert check(records, build("user")(records)) == {"c1": "c0", "c3": "c0"}, name
        assert check(records, build("assistant")(records)) == {"c2": "c0", "c3": "c0", "c4": "c0"}, name
        assert check(records, build("all")(records)) == {"c3": "c0"}, name


def test_empty_views_are_never_duplicates(paragraphs: list[str], semantic_stage) -> None:
    texts = ["", None, "   ", "", "\n", None, paragraphs[0], paragraphs[0]]
    records = frame(texts)
    minhash = build_minhash_stage(MinHashDedup(), progress=False)
    for stage in (build_exact_stage(ExactDedup()), minhash, semantic_stage):
        assert check(records, stage(records)) == {"r7": "r6"}, stage.name
        empty = stage(records.head(0))
        assert empty.kept.height == 0 and empty.rejected.height == 0


# --- preference siblings ----------------------------------------------------------------------


def sibling_records(paragraphs: list[str]) -> pl.DataFrame:
    """Answers to one prompt that are exact, near and semantic duplicates of each other but differ
    (siblings: candidates for a preference pair), and the same answers to other prompts (not)."""
    long = max(paragraphs, key=lambda t: len(t.split()))
    (a1, a2), (b1, b2), _ = PARAPHRASES
    q = [f"Question {i}: what does this passage say?" for i in range(5)]
    answers = [
        (q[0], long),
        (q[0], long.upper()),  # an exact duplicate once normalised
        (q[0], edit(long, [10, 60])),  # a near duplicate
        (q[1], long),  # the same answer to another prompt: no sibling
        (q[0], "  " + long),  # the same stripped answer to the same prompt: merged into c0's
        (q[2], a1),
        (q[2], a2),  # a paraphrase
        (q[3], b1),
        (q[4], b2),  # a paraphrase, to another prompt
    ]
    return records_frame([conversation(i, question, answer) for i, (question, answer) in enumerate(answers)])


@pytest.mark.parametrize(
    ("build", "before", "after"),
    [
        (lambda keep: build_exact_stage(ExactDedup(view="assistant"), keep_siblings=keep),
         {"c1": "c0", "c3": "c0", "c4": "c0"}, {"c3": "c0", "c4": "c0"}),
        (lambda keep: build_minhash_stage(MinHashDedup(view="assistant"), progress=False, keep_siblings=keep),
         {"c1": "c0", "c2": "c0", "c3": "c0", "c4": "c0"}, {"c3": "c0", "c4": "c0"}),
        (lambda keep: build_semantic_stage(SemanticDedup(threshold=THRESHOLD, view="assistant"), progress=False,
                                           keep_siblings=keep),
         {"c1": "c0", "c2": "c0", "c3": "c0", "c4": "c0", "c6": "c5", "c8": "c7"}, {"c3": "c0", "c4": "c0", "c8": "c7"}),
    ],
    ids=["exact", "minhash", "semantic"],
)
def test_sibling_answers_are_kept_when_preference_is_configured(
    paragraphs: list[str], tmp_path: Path, build, before: dict, after: dict
) -> None:
    records = sibling_records(paragraphs)
    plain = build(False)(records)
    assert check(records, plain) == before and plain.figures.siblings_protected is None
    kept = build(True)(records)
    assert check(records, kept) == after
    assert kept.figures.siblings_protected == len(before) - len(after)
    # In shards of 4 records (rows found by their shard's offset) the stage decides the same.
    writer = CorpusWriter(tmp_path / "corpus", 4, tmp_path / "scratch", RECORD_SCHEMA)
    writer.write(records)
    sharded = build(True)(writer.close())
    assert sharded.rejected.collect()["id"].to_list() == kept.rejected["id"].to_list()


def test_siblings_need_two_distinct_answers_to_a_prompt_ending_with_a_user_turn() -> None:
    def sft(i: int, *turns: tuple[str, str]) -> dict:
        return row(f"s{i}", "sft", messages=[{"role": role, "content": text} for role, text in turns])

    records = records_frame([
        sft(0, ("user", "Q"), ("assistant", "A")),
        sft(1, ("system", "Be brief."), ("user", "Q"), ("assistant", "A")),  # another prompt
        sft(2, ("user", "Q"), ("assistant", "B ")),
        sft(3, ("user", "Q"), ("assistant", "B")),  # B again once stripped: only the first is kept
        sft(4, ("user", "Q"), ("assistant", "C"), ("user", "Thanks")),  # the last answer is C
        sft(5, ("user", "R"), ("assistant", "A")),  # R has one answer
        sft(6, ("user", "S"), ("assistant", "x"), ("user", "T"), ("assistant", "y")),
        sft(7, ("user", "S"), ("assistant", "x"), ("user", "T"), ("assistant", "z")),
        row("r8", "raw", text="Q"),
    ])
    assert protected_rows(records).tolist() == [0, 2, 4, 6, 7]
    assert protected_rows(records.head(0)).tolist() == []
    # Without siblings a stage that protects them decides as one that does not.
    raw = frame(["a text", "A text.", "another"])
    result = build_exact_stage(ExactDedup(), keep_siblings=True)(raw)
    assert check(raw, result) == {"r1": "r0"} and result.figures.model_dump() == {"siblings_protected": 0}


def test_oasst_pairs_survive_dedup(public_data: Path, tmp_path: Path) -> None:
    """Real oasst trees: ranked sibling replies share their prompt, and answer-only dedup finds
    many of them alike. With preference configured, all three stages leave the pairs alone."""
    inputs = [{"path": str(public_data / "sft" / "oasst_en_100_tree.jsonl")}]
    preference = {"ranking": "human"}
    dedup = {"exact": {}, "minhash": {}, "semantic": {"threshold": 0.9, "view": "assistant"}}
    plain = run_pipeline(CurateConfig(inputs=inputs, preference=preference), tmp_path / "plain", in_memory=True)
    deduped = run_pipeline(CurateConfig(inputs=inputs, preference=preference, dedup=dedup), tmp_path / "dedup", in_memory=True)
    pairs = plain.stage("preference").figures.generated
    assert pairs > 100
    assert deduped.stage("preference").figures.generated >= 0.95 * pairs
    assert all(deduped.stage(s).figures.siblings_protected > 0 for s in ("dedup_minhash", "dedup_semantic"))
    # Without a preference section the same dedup removes many of them.
    alone = run_pipeline(CurateConfig(inputs=inputs, dedup=dedup), tmp_path / "alone", in_memory=True)
    assert alone.stage("dedup_semantic").removed > 50
