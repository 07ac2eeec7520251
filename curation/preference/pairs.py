"""Preference pairs: gather candidate answers per prompt, rank them, pair the best with a worse one.

Candidates for a prompt (the turns before an sft record's last answer) are: the answers already
in the data for that same prompt (oasst sibling replies carry their human rank; with
`ranking: source`, each carries its input file's place in `source_order`), answers from the
configured generator models, and the bundled local model sampled at each `local_temperatures`.
The jury rates every candidate (answers it already rated in the jury stage come from the cache),
and `curation.preference.rules.choose_pair` applies the rules: human ranks and/or jury scores, ties
dropped, a minimum margin and a minimum chosen score. With `preference.pairwise`, every distinct
jury model then compares each jury-ranked pair's two answers in both orders
(`curation.preference.pairwise`) and the pair stays only if more models prefer the chosen one. \
Each pair is a new preference record whose
`meta.preference` keeps every candidate with its origin, human rank and per-judge scores.
Prompts that yield no pair are counted per reason; the sft records stay in the run either way.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
import polars as pl

from curation.jury.aggregate import length_preference_rate
from curation.jury.judge import JudgeItem, load_rubric, render_conversation
from curation.jury.panel import Jury
from curation.llm.cache import AnswerCache
from curation.llm.chat import open_model
from curation.llm.endpoint import Budget
from curation.llm.failures import check_failures
from curation.llm.types import ChatModel, ChatRequest
from curation.preference.pairwise import Comparison, PairwiseJudge, position_stats
from curation.preference.rules import Candidate, PairDecision, choose_pair, shuffled_order
from schemas.base import StageFailed
from schemas.figures import PairwiseFigures, PreferenceFigures
from schemas.jury import JuryVerdict, Local, ModelSpec, PairwiseCheck, PreferenceConfig
from schemas.record import Record, records_frame

STAGE = "preference"


@dataclass
class Prompt:
    turns: list[dict]  # the conversation up to (not including) the answer
    first_id: str
    first_source: str  # the input row of its first record: a pair's source names that file
    candidates: list[Candidate] = field(default_factory=list)
    judges: dict[str, dict] = field(default_factory=dict)  # per candidate origin: each judge's score


def group_prompts(records: pl.DataFrame, existing: bool, source_order: Sequence[str] = ()) -> list[Prompt]:
    """One Prompt per distinct conversation prefix of the sft records, in first-seen order."""
    prompts: dict[bytes, Prompt] = {}
    source_ranks: dict[str, int | None] = {}
    for row in records.filter(pl.col("kind") == "sft").iter_rows(named=True):
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        turns = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
        if not turns or turns[-1]["role"] != "user":
            continue  # a preference prompt must end with the user's turn
        prompt = prompts.setdefault(orjson.dumps(turns), Prompt(turns, row["id"], row["source"]))
        if existing:
            meta = orjson.loads(row["meta"]) if row["meta"] else {}
            verdict = JuryVerdict.read(meta)
            origin = f"data:{row['id']}"
            file = _input_file(row["source"])
            if file not in source_ranks:
                source_ranks[file] = _source_rank(file, source_order)
            score = verdict.score if verdict else None
            candidate = Candidate(messages[last]["content"], origin, score, _rank(meta), source_ranks[file])
            prompt.candidates.append(candidate)
            if verdict and verdict.judges:
                prompt.judges[origin] = verdict.judges
    return list(prompts.values())


def _input_file(source: str) -> str:
    """`path:line`, `path#row` or `path[split]#row` -> path."""
    return re.sub(r"(:\d+|(\[[^\]]*\])?#.*)$", "", source)


def _source_rank(file: str, order: Sequence[str]) -> int | None:
    """The place of the first `order` entry naming this file (its name, or the end of its path)."""
    path = Path(file)
    for i, entry in enumerate(order):
        if path.name == entry or path.as_posix().endswith("/" + entry.lstrip("/")):
            return i
    return None


def _rank(meta: dict) -> int | None:
    ranks = meta.get("ranks")  # oasst: the human rank of each turn among its siblings
    return ranks[-1] if isinstance(ranks, list) and ranks and isinstance(ranks[-1], int) else None


def add_generated(
    prompts: list[Prompt], model: ChatModel, temperature: float, max_tokens: int, progress: str | None
) -> Counter[str]:
    """Ask `model` for one answer per prompt; returns the failed requests by error kind."""
    requests = [
        ChatRequest(
            messages=tuple((t["role"], t["content"]) for t in p.turns),
            temperature=temperature,
            max_tokens=max_tokens,
            seed=0,
        )
        for p in prompts
    ]
    failed: Counter[str] = Counter()
    for prompt, answer in zip(prompts, model.complete(requests, progress=progress), strict=True):
        if answer.text and answer.text.strip():
            origin = model.identity if temperature == 0 else f"{model.identity} t={temperature}"
            prompt.candidates.append(Candidate(answer.text.strip(), origin))
        else:
            failed[answer.error or "empty answer"] += 1
    return failed


def build_pairs(
    prompts: list[Prompt], cfg: PreferenceConfig, jury: Jury | None, progress: bool
) -> tuple[pl.DataFrame, PreferenceFigures]:
    """Rate the candidates that need it, choose a pair per prompt; new preference records and stats."""
    if jury is not None:
        _rate(prompts, cfg, jury, progress)
    rng = random.Random(cfg.seed)
    decisions = [
        # choose_pair breaks ties by input order; a per-prompt shuffle keeps that from always
        # favouring the data's own answers, which come first.
        choose_pair(_shuffled(p, cfg.seed), cfg.ranking, cfg.rejected, cfg.min_margin, cfg.min_chosen_score, rng)
        for p in prompts
    ]
    checks: dict[int, dict] = {}
    pairwise_stats: PairwiseFigures | None = None
    if cfg.pairwise is not None and jury is not None:
        checks, pairwise_stats = _confirm_pairwise(prompts, decisions, cfg.pairwise, jury, progress)
    rows, reasons = [], Counter()
    for p, (prompt, decision) in enumerate(zip(prompts, decisions, strict=True)):
        if decision.reason is not None:
            reasons[decision.reason] += 1
            continue
        rows.append(_pair_record(prompt, decision, checks.get(p)))
    figures = PreferenceFigures(
        prompts=len(prompts),
        candidates=sum(len(p.candidates) for p in prompts),
        generated=len(rows),
        no_pair_by_reason=dict(reasons.most_common()),
        # Judges favour longer answers; how often the chosen one is the longer shows that bias.
        chosen_is_longer=length_preference_rate(
            [len(r["chosen"][0]["content"]) for r in rows], [len(r["rejected"][0]["content"]) for r in rows]
        ),
    )
    if pairwise_stats is not None:
        figures.pairwise = pairwise_stats
    return records_frame(rows), figures


def _confirm_pairwise(
    prompts: list[Prompt], decisions: list[PairDecision], check: PairwiseCheck, jury: Jury, progress: bool
) -> tuple[dict[int, dict], PairwiseFigures]:
    """Compare chosen and rejected of every jury-ranked pair in both orders, once per distinct
    jury model; drop (in `decisions`) the pairs most models do not confirm. Returns each compared
    pair's verdicts by model, and the stats."""
    todo = [i for i, d in enumerate(decisions) if d.reason is None and d.ranking == "jury"]
    models = {j.model.identity: j.model for j in jury.judges}  # three rubrics on one model: one comparison
    rubric = load_rubric(check.rubric)
    pairs = [(render_conversation(prompts[i].turns), decisions[i].chosen.text, decisions[i].rejected.text) for i in todo]
    checks: dict[int, dict] = {i: {} for i in todo}
    comparisons: list[Comparison] = []
    for identity, model in models.items():
        judge = PairwiseJudge(identity, model, rubric, max_chars=jury.cfg.max_chars)
        found = judge.compare(pairs, progress=f"pairwise {identity}" if progress and pairs else None)
        comparisons += found
        for i, c in zip(todo, found, strict=True):
            checks[i][identity] = {"verdict": c.verdict, "chosen_first": c.a_first, "chosen_second": c.a_second}
    outcome = Counter()
    for i in todo:
        votes = Counter(v["verdict"] for v in checks[i].values())
        if votes["a"] > votes["b"]:
            outcome["confirmed"] += 1
            continue
        reason = "pairwise_disagrees" if votes["b"] > votes["a"] else "pairwise_tie"
        outcome[reason] += 1
        decisions[i] = replace(decisions[i], chosen=None, rejected=None, reason=reason)
    stats = {"compared": len(todo), **{k: outcome[k] for k in ("confirmed", "pairwise_tie", "pairwise_disagrees")}}
    return checks, PairwiseFigures.model_validate({**stats, **position_stats(comparisons)})


def _shuffled(prompt: Prompt, seed: int) -> list[Candidate]:
    return [prompt.candidates[i] for i in shuffled_order(len(prompt.candidates), prompt.first_id, seed)]


def _needs_jury(prompt: Prompt, ranking: str) -> bool:
    if len(prompt.candidates) < 2 or ranking in ("human", "source"):
        return False
    ranked = sum(c.human_rank is not None for c in prompt.candidates)
    return ranking == "jury" or ranked < 2


def _rate(prompts: list[Prompt], cfg: PreferenceConfig, jury: Jury, progress: bool) -> None:
    """Give a jury score to every candidate that needs one and has none yet (answers from the
    data carry the jury stage's score already)."""
    where = [
        (p, c)
        for p, prompt in enumerate(prompts)
        if _needs_jury(prompt, cfg.ranking)
        for c, candidate in enumerate(prompt.candidates)
        if candidate.score is None
    ]
    if not where:
        return
    items = [JudgeItem(render_conversation(prompts[p].turns), prompts[p].candidates[c].text) for p, c in where]
    verdicts = jury.rate(items, progress)
    for k, (p, c) in enumerate(where):
        old = prompts[p].candidates[c]
        score = None if math.isnan(verdicts.scores[k]) else float(verdicts.scores[k])
        prompts[p].candidates[c] = Candidate(old.text, old.origin, score, old.human_rank)
        prompts[p].judges[old.origin] = {
            n: None if math.isnan(s) else round(float(s), 4) for n, s in zip(jury.names, verdicts.by_judge[k], strict=True)
        }


def _pair_record(prompt: Prompt, decision: PairDecision, pairwise: dict | None) -> dict:
    chosen, rejected = decision.chosen, decision.rejected
    key = orjson.dumps([prompt.turns, chosen.text, rejected.text])

    def described(c: Candidate) -> dict:
        ranks = {"human_rank": c.human_rank} | ({"source_rank": c.source_rank} if c.source_rank is not None else {})
        return {"origin": c.origin, "score": c.score, **ranks, "judges": prompt.judges.get(c.origin)}


    return Record(
        id="pref-" + hashlib.sha1(key).hexdigest()[:16],
        source=f"{STAGE}:{prompt.first_source}",
        kind="preference",
        messages=prompt.turns,
        chosen=[{"role": "assistant", "content": chosen.text}],
        rejected=[{"role": "assistant", "content": rejected.text}],
        meta={
            "preference": {
                "ranking": decision.ranking,
                "margin": decision.margin,
                "chosen": described(chosen),
                "rejected": described(rejected),
                "candidates": [described(c) for c in prompt.candidates],
                **({"pairwise": pairwise} if pairwise is not None else {}),
            }
        },
    ).to_row()


def generate_pairs(
    cfg: PreferenceConfig, jury: Jury | None, cache: AnswerCache | None, budget: Budget | None, progress: bool
) -> Callable[[pl.DataFrame], tuple[pl.DataFrame, PreferenceFigures]]:
    """The preference step's work (curation/core/plan.py): records -> the pairs and their figures.
    Each candidate generator answers every prompt; too many failed answers stop the run."""

    def run(records: pl.DataFrame) -> tuple[pl.DataFrame, PreferenceFigures]:
        prompts = group_prompts(records, cfg.candidates.existing, cfg.source_order)
        if cfg.max_prompts is not None:
            prompts = prompts[: cfg.max_prompts]
        failed: dict[str, Counter[str]] = {}
        samplers = [(open_model(spec, cache, budget), 0.7, "answers") for spec in cfg.candidates.generators]
        samplers += [
            (open_model(ModelSpec(local=Local()), cache, budget), t, f"answers t={t}") for t in cfg.candidates.local_temperatures
        ]
        for model, temperature, label in samplers:
            bar = label if progress else None
            try:
                failed[model.identity] = add_generated(prompts, model, temperature, cfg.candidates.max_tokens, bar)
            except StageFailed as exc:
                raise StageFailed(f"preference: candidate generator: {exc}") from None
            check_failures(
                "preference candidates", failed[model.identity].total(), len(prompts),
                cfg.candidates.max_failed, "preference.candidates.max_failed", {model.identity: failed[model.identity]},
            )
        pairs, stats = build_pairs(prompts, cfg, jury, progress)
        stats.failed_generations = sum(c.total() for c in failed.values())
        return pairs, stats

    return run
