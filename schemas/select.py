"""The `select:` section of the run config: keep the best sft records within a budget.

Validated like the rest of the config (unknown keys are errors). Which signals a score may weigh
depends on the other sections (the jury's score needs a `jury:` section, IFD an `ifd:` block):
CurateConfig checks that, so a weight on a signal the run cannot compute is a config error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.base import Strict, TextView

Signal = Literal["jury", "ifd", "length"]
SIGNALS: tuple[Signal, ...] = ("jury", "ifd", "length")


class SelectBudget(Strict):
    records: int | None = Field(None, ge=1, description="Select exactly this many sft records (when there are).")
    tokens: int | None = Field(
        None, ge=1, description="Select sft records until their rendered tokens (export's tokenizer) would exceed this."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SelectBudget:
        if (self.records is None) == (self.tokens is None):
            raise ValueError("set exactly one of records and tokens")
        return self


class SelectScore(Strict):
    """Weights of the signals; each signal is turned into its percentile among the sft records
    first, so weights compare signals on one scale. Unset signals are not computed; with none set,
    every record scores 0 and ties go by id (a content hash: a deterministic sample)."""

    jury: float | None = Field(None, description="The jury's aggregate (or distilled) score; needs `jury:`.")
    ifd: float | None = Field(None, description="Instruction-following difficulty; needs `select.ifd`.")
    length: float | None = Field(None, description="Rendered tokens of the record (negative: prefer short).")

    def weights(self) -> dict[str, float]:
        """The signals set and their weights, in SIGNALS order."""
        return {s: w for s in SIGNALS if (w := getattr(self, s)) is not None}

    @model_validator(mode="after")
    def _some_weight(self) -> SelectScore:
        if self.weights() and not any(self.weights().values()):
            raise ValueError("every weight is 0: nothing would rank the records")
        return self


class SelectDiversity(Strict):
    method: Literal["radius", "mmr", "none"] = Field(
        "radius",
        description="radius: best score first, skipping records within `radius` (cosine) of a selected one;"
        " mmr: maximal marginal relevance (lambda * score - (1 - lambda) * closest cosine); none: score only.",
    )
    radius: float = Field(0.9, gt=0, le=1, description="radius: cosine at or above which a record is too close.")
    mmr_lambda: float = Field(0.7, ge=0, le=1, description="mmr: weight of the score against similarity.")
    view: TextView = "no_system"
    model: str | None = Field(None, description="As dedup.semantic.model (null = the bundled static model).")
    max_seq_length: int | None = Field(None, ge=8, description="Tokens embedded per text; null = the whole text (static).")


class SelectIfd(Strict):
    """IFD (Li et al. 2024, "From Quantity to Quality"): the causal LM's mean loss on the answer
    given the instruction, over its mean loss on the answer alone."""

    model: str | None = Field(None, description="Local causal LM directory; null = train.base_model, else bundled SmolLM2.")
    batch_size: int = Field(8, ge=1)
    max_tokens: int = Field(512, ge=16, description="Tokens per conditioned text; the answer keeps at most half.")


class SelectConfig(Strict):
    budget: SelectBudget
    score: SelectScore = Field(
        SelectScore(), description="Signal weights; absent = jury 1 with a jury section, else none (id order)."
    )
    diversity: SelectDiversity = SelectDiversity()
    ifd: SelectIfd | None = Field(None, description="Compute IFD with a causal LM (slow: the model reads each record twice).")
