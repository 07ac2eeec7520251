"""Open the chat model a config names, behind the shared answer cache."""

from __future__ import annotations

from curation.llm.cache import AnswerCache, CachedModel
from curation.llm.endpoint import Budget, EndpointModel
from curation.llm.local import LocalModel
from curation.llm.types import ChatModel
from schemas.jury import ModelSpec


def open_model(spec: ModelSpec, cache: AnswerCache | None, budget: Budget | None = None) -> ChatModel:
    """An endpoint or local model for `spec`; answers are cached when `cache` is given.

    One budget is shared by every endpoint of a run, so the cap is on the run's total.
    """
    model: ChatModel = EndpointModel(spec.endpoint, budget) if spec.endpoint else LocalModel(spec.local)
    return CachedModel(model, cache) if cache is not None else model
