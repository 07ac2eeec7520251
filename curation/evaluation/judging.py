"""A training's held-out generations judged: the jury's win-rate of the tuned model against its
base (with a `jury:` section) and the error analysis of both models' answers. The train flow
runs it as a candidate's judge step (training.candidates.JudgeStep)."""

from __future__ import annotations

from curation.evaluation.errors import error_analysis
from curation.evaluation.winrate import win_rate
from curation.jury.panel import Jury
from curation.llm.cache import default_cache
from curation.llm.endpoint import Budget
from curation.llm.tokenizer import load_tokenizer
from schemas.config import CurateConfig
from schemas.train_result import Judgement


def judge(config: CurateConfig, progress: bool, base_model: str, generations: list[dict]) -> Judgement:
    """Jury win-rate (with a `jury:` section) and error analysis of the base and tuned answers;
    `base_model` (a local path) gives the tokenizer the error analysis counts with."""
    win = None
    if config.jury is not None:
        jury = Jury(config.jury, default_cache(config.jury.cache_dir), Budget(config.jury.budget_usd))
        win = win_rate(generations, jury, progress)
        win["usage"] = jury.usage()
    tokenizer = load_tokenizer(base_model)
    repetition = config.filters.repetition if config.filters else None
    return Judgement(win_rate=win, errors=error_analysis(generations, tokenizer, repetition))
