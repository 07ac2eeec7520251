"""Chat templates: the one place that decides how a conversation becomes text.

Export (token lengths, dataset cards) and training render conversations with the same
tokenizer and template, so what was measured and checked at export time is byte for byte what
the model trains on. A template is either the tokenizer's own or a named one shipped here as
`chat_templates/<name>.jinja`:

- chatml: `<|im_start|>role\\n...<|im_end|>\\n`, nothing injected (SmolLM2's own template is
  the same plus a default system prompt when a conversation has none).
- llama3: Meta Llama-3-Instruct, byte-identical to the original (TRL recognises it and swaps in
  its `{% generation %}`-marked twin for assistant-only loss).
- mistral: Mistral / Mixtral-Instruct v0.1 (the revised template with system support):
  `[INST]` turns, the system prompt folded into the first user turn, strict user/assistant
  alternation, no tool turns.
- zephyr: HuggingFaceH4/zephyr-7b-beta: `<|user|>`, `<|assistant|>`, `<|system|>` blocks.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from schemas.base import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TemplateName = Literal["chatml", "llama3", "mistral", "zephyr"]
TEMPLATE_NAMES: tuple[str, ...] = get_args(TemplateName)
TEMPLATE_DIR = Path(__file__).parent / "chat_templates"

Tokenizer = TypeVar("Tokenizer", bound="PreTrainedTokenizerBase")


def named_template(name: str) -> str:
    """The Jinja source of a named template."""
    if name not in TEMPLATE_NAMES:
        raise ConfigError(f"unknown chat template {name!r}: use one of {', '.join(TEMPLATE_NAMES)}")
    # An editor's final newline is not part of the template: TRL recognises templates (llama3)
    # by exact comparison, so the text must match the original byte for byte.
    return (TEMPLATE_DIR / f"{name}.jinja").read_text(encoding="utf-8").removesuffix("\n")


def apply_template(tokenizer: Tokenizer, name: TemplateName | None) -> Tokenizer:
    """A tokenizer that renders with `name`'s template; None keeps the tokenizer's own.

    A named template goes on a copy: loaded tokenizers are cached and shared (curation.llm.tokenizer),
    and one caller's choice must not change what another renders.
    """
    if name is None:
        if not tokenizer.chat_template:
            raise ConfigError(
                "the tokenizer has no chat template: set export.chat_template"
                f" ({', '.join(TEMPLATE_NAMES)})"
            )
        return tokenizer
    templated = copy.deepcopy(tokenizer)
    templated.chat_template = named_template(name)
    return templated
