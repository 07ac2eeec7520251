"""The `train:` section of the run config: LoRA / QLoRA fine-tuning with SFT, DPO or ORPO.

Validated like the rest of the config (unknown keys are errors, messages name the YAML path).
A stage section (`sft`, `dpo`, `orpo`) that the chosen `method` never runs is an error too:
settings that are silently ignored are worse than a refusal. The output directory is the
caller's (the CLI's run directory), not part of this section.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from schemas.base import ConfigError, Strict
from schemas.chat import TemplateName

Method = Literal["sft_dpo", "sft", "dpo", "orpo", "prompt_tuning"]
Quantization = Literal["none", "4bit"]
Reporter = Literal["tensorboard", "wandb", "mlflow"]
GgufType = Literal["f16", "q8_0"]
# Metrics a candidate can be chosen by, and whether higher is better.
Metric = Literal["eval_loss", "rouge_l", "bertscore", "win_rate"]
HIGHER_IS_BETTER: dict[str, bool] = {"eval_loss": False, "rouge_l": True, "bertscore": True, "win_rate": True}
CANDIDATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# The stage sections each method runs, in order.
METHOD_STAGES: dict[str, tuple[str, ...]] = {
    "sft_dpo": ("sft", "dpo"),
    "sft": ("sft",),
    "dpo": ("dpo",),
    "orpo": ("orpo",),
    "prompt_tuning": ("sft",),  # SFT that trains soft prompt tokens instead of a LoRA adapter
}

# The exported set (RUN_DIR/export/hf/<kind>) each stage trains on.
STAGE_SET: dict[str, str] = {"sft": "sft", "dpo": "preference", "orpo": "preference"}


class TrainingInputError(ConfigError):
    """Training cannot start with these inputs (data, model, adapter); raised before any step."""


class Lora(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="'all-linear' (every linear layer but the LM head) or module names."
    )

    @model_validator(mode="after")
    def _some_modules(self) -> Lora:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules is empty: name modules or use 'all-linear'")
        if isinstance(self.target_modules, list) and "lm_head" in self.target_modules:
            # TRL computes log-probs from lm_head.weight directly, so an adapter there never trains.
            raise ValueError("the LM head cannot take an adapter (TRL bypasses it): remove 'lm_head'")
        return self


class PromptTuning(Strict):
    """PEFT prompt tuning (Lester et al. 2021): virtual tokens prepended to every input are the
    only trained weights, initialised from the embeddings of `init_text`."""

    num_virtual_tokens: int = Field(8, ge=1)
    init_text: str = Field(
        "Answer the question helpfully and accurately.",
        min_length=1,
        description="Text whose token embeddings initialise the virtual tokens (cycled to fill them).",
    )


class Stage(Strict):
    """What every training stage has; the stage sections add their own knobs."""

    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1, description="-1 = run `epochs`; else stop after this many steps.")
    learning_rate: float = Field(ge=0, description="0 = a control run: the adapter keeps its initial weights.")
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(4, ge=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    gradient_checkpointing: bool = True
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1, description="Checkpoint (and evaluate) every this many steps.")

    @model_validator(mode="after")
    def _steps_not_zero(self) -> Stage:
        if self.max_steps == 0:
            raise ValueError("max_steps is 0: use -1 to train by epochs, or a positive step count")
        return self


class Sft(Stage):
    learning_rate: float = Field(2e-4, ge=0)
    packing: bool = False
    assistant_only_loss: bool = Field(True, description="Loss on assistant tokens only.")


class Dpo(Stage):
    learning_rate: float = Field(5e-6, ge=0)
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")


class Orpo(Stage):
    learning_rate: float = Field(8e-6, ge=0)
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term (lambda in the paper).")


class Eval(Strict):
    """Post-training evaluation on the held-out rows (training/evaluate.py)."""

    enabled: bool = True
    max_rows: int | None = Field(
        None, ge=1, description="Held-out rows for eval loss (the test split is shuffled); null = all."
    )
    rouge_sample: int = Field(
        16, ge=0, description="Held-out conversations answered by base and tuned model (ROUGE-L, BERTScore,"
        " win-rate, error analysis); 0 = none."
    )
    max_new_tokens: int = Field(128, ge=1, description="Tokens per generated answer, within max_seq_length.")


VARIANT = re.compile(r"curated|selected|raw|random|minus-[a-z_]+")


class Ablation(Strict):
    """Data ablations: the same training (the first candidate's settings) on variants of the
    curated sft set, all evaluated on the held-out rows of the run's exported set (removed from
    every variant's train rows). curated: the run's curation (before a select step's selection);
    selected: the run's exported set when it has a select step; raw: every sft record the
    pipeline read (kept + rejected, less ingest's and export's rejects, which are no records a
    trainer takes); random: a seeded sample of raw the size of the exported set; minus-<stage>:
    curated plus that stage's rejects back."""

    variants: list[str] = Field(min_length=2, description="curated | selected | raw | random | minus-<stage>; at least two.")
    seed: int = Field(0, description="The random variant's sample.")

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, value: list[str]) -> list[str]:
        for name in value:
            if not VARIANT.fullmatch(name):
                raise ValueError(f"'{name}': a variant is curated, selected, raw, random or minus-<stage>")
        if len(set(value)) != len(value):
            raise ValueError("a variant is listed twice")
        return value

    def reference(self) -> str:
        """The variant the others are compared with: curated when listed, else the first."""
        return "curated" if "curated" in self.variants else self.variants[0]


class TrainConfig(Strict):
    base_model: str | None = Field(
        None, description="Local model directory; null = bundled SmolLM2-135M-Instruct."
    )
    method: Method = "sft_dpo"
    quantization: Quantization = Field(
        "none", description="4bit = QLoRA: NF4 base weights, double quantisation."
    )
    lora: Lora = Lora()
    prompt_tuning: PromptTuning = PromptTuning()
    chat_template: TemplateName | None = Field(
        None, description="Named chat template; null = the tokenizer's own. Set from export.chat_template."
    )
    max_seq_length: int = Field(1024, ge=16)
    truncation: Literal["truncate", "drop"] = Field(
        "truncate", description="Rows longer than max_seq_length: cut them, or leave them out."
    )
    max_dropped: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of a stage's train rows that may be left out for not fitting max_seq_length;"
        " more stops before any stage trains (exit 2). 1 = never stop.",
    )
    sft: Sft = Sft()
    dpo: Dpo = Dpo()
    orpo: Orpo = Orpo()
    seed: int = 42
    report_to: list[Reporter] = Field(["tensorboard"], validate_default=True, description="[] = no logger.")
    save_merged: bool = Field(False, description="After the last stage, also save base + adapter merged.")
    export_gguf: GgufType | None = Field(
        None, description="Also write the merged model as GGUF (f16 | q8_0) and check it loads back the same."
    )
    eval: Eval = Eval()
    candidates: list[dict[str, Any]] = Field(
        [], description="Runs to compare: each a `name` plus overrides of this section; [] = this section alone."
    )
    select_by: list[Metric] = Field(
        ["eval_loss", "rouge_l"], min_length=1, description="The winner's metric, then tie-breakers."
    )
    ablation: Ablation | None = Field(
        None, description="Also train the first candidate on variants of the data (train/ablation/); null = none."
    )

    @field_validator("quantization")
    @classmethod
    def _bitsandbytes_installed(cls, value: Quantization) -> Quantization:
        if value == "4bit" and importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("'4bit' needs bitsandbytes: pip install bitsandbytes, or use 'none'")
        return value

    @field_validator("report_to")
    @classmethod
    def _reporters_installed(cls, value: list[Reporter]) -> list[Reporter]:
        for reporter in value:
            if importlib.util.find_spec(reporter) is None:
                raise ValueError(f"'{reporter}' is not installed: pip install {reporter}, or remove it")
        return value

    @model_validator(mode="after")
    def _sections_match_method(self) -> TrainConfig:
        stages = METHOD_STAGES[self.method]
        for section in ("sft", "dpo", "orpo"):
            if section in self.model_fields_set and section not in stages:
                raise ValueError(
                    f"a '{section}' section is set but method '{self.method}' runs only"
                    f" {' + '.join(stages)}: remove the section or change the method"
                )
        if "prompt_tuning" in self.model_fields_set and self.method != "prompt_tuning":
            raise ValueError(f"a 'prompt_tuning' section is set but method is '{self.method}': use method: prompt_tuning")
        if "lora" in self.model_fields_set and self.method == "prompt_tuning":
            raise ValueError("a 'lora' section is set but method 'prompt_tuning' trains no LoRA adapter")
        if self.method == "prompt_tuning" and (self.save_merged or self.export_gguf):
            raise ValueError(
                "save_merged / export_gguf: a prompt-tuning adapter cannot be merged into the weights (it adds input tokens)"
            )
        self.candidate_configs()  # every candidate must be a valid train section too
        return self

    def ablation_config(self) -> TrainConfig:
        """What every ablation variant trains with: the first candidate's settings (this
        section's without candidates), its fingerprint free of the ablation itself."""
        first = next(iter(self.candidate_configs().values()))
        return first.model_copy(update={"candidates": [], "ablation": None})

    def sets_needed(self) -> list[str]:
        """The exported sets every candidate's stages together train on."""
        return sorted({STAGE_SET[s] for c in self.candidate_configs().values() for s in METHOD_STAGES[c.method]})

    def candidate_configs(self) -> dict[str, TrainConfig]:
        """Each candidate's train section: this one (as written) with its overrides merged in,
        nested sections key by key, null resetting a setting to its default. Without candidates,
        this section alone, named "main"."""
        if not self.candidates:
            return {"main": self}
        written = self.model_dump(exclude_unset=True, exclude={"candidates", "select_by", "ablation"})
        configs: dict[str, TrainConfig] = {}
        for i, override in enumerate(self.candidates):
            name = override.get("name")
            if not isinstance(name, str) or not CANDIDATE_NAME.fullmatch(name):
                raise ValueError(f"candidates[{i}]: needs a `name` of letters, digits, '_', '.' or '-'")
            if name in configs or name == "best":
                raise ValueError(f"candidates[{i}]: the name '{name}' is {'taken' if name in configs else 'reserved'}")
            rest = {k: v for k, v in override.items() if k != "name"}
            if {"candidates", "select_by", "ablation"} & set(rest):
                raise ValueError(f"candidates[{i}] ({name}): candidates, select_by and ablation belong to the train section")
            try:
                configs[name] = TrainConfig.model_validate(_merged(written, rest))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"candidates[{i}] ({name}): {problems}") from None
        return configs


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` merged into `base`, nested dicts key by key; a null resets a key to its default."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged
