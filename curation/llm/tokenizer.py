"""Tokenizers the stages load (token bounds, export, synthesis chunks): a local directory or .gguf
file, by default the bundled SmolLM2's (saved from its GGUF once); never from a hub."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.bundled import smollm2_tokenizer_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> PreTrainedTokenizerBase:
    """A tokenizer from a local directory or .gguf file; None = the bundled SmolLM2 one.

    Loading a GGUF tokenizer takes ~10 s on 2 cores, hence the cache.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
    from transformers import AutoTokenizer  # heavy: only imported when token bounds are set

    source = smollm2_tokenizer_dir() if path is None else Path(path)
    if source.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
    return AutoTokenizer.from_pretrained(source, local_files_only=True)
