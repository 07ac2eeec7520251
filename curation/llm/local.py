"""A local transformers chat model (default: the bundled SmolLM2-135M-Instruct) behind ChatModel.

CPU by default, CUDA when available (bf16 where supported, else fp16). Weights and tokenizer load
on first use and are shared by every LocalModel on the same path. Requests are rendered with the
tokenizer's chat template, cut to the last `max_length` prompt tokens, grouped by decoding mode
and sorted by length (less padding), then run in left-padded batches of `batch_size` through a
small decoding loop with a KV cache: greedy at temperature 0, else sampling with a generator per
request (seeded by `request.seed`, or by the request's hash when unset, so a request always gets
the same answer). A request for one token is a single forward pass. With `logprobs`, each
generated position reports the top `top_logprobs` tokens and every `logprob_tokens` entry, from
the full-vocabulary log-softmax, keyed by their text without leading spaces ("4", as endpoints
show it); variants that share a key have their probabilities added.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curation.llm.types import ChatRequest, Completion, OnDone, Usage
from schemas.base import ConfigError
from schemas.bundled import SMOLLM2_NAME, bundled_smollm2_gguf, cache_dir, smollm2_dir
from schemas.jury import Local

_LOADED: dict[str, tuple[Any, Any, Any]] = {}  # resolved path -> (model, tokenizer, device)
_LOAD_LOCK = threading.Lock()


def _load(path: Path) -> tuple[Any, Any, Any]:
    key = str(path)
    with _LOAD_LOCK:
        if key not in _LOADED:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers imports huggingface_hub
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if torch.cuda.is_available():
                device = torch.device("cuda")
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                device, dtype = torch.device("cpu"), torch.float32
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
            except (OSError, ValueError) as e:
                raise ConfigError(f"local model {path}: cannot load it with transformers ({e})") from e
            if not tokenizer.chat_template:
                raise ConfigError(f"local model {path}: its tokenizer has no chat template")
            model.to(device).eval()
            _LOADED[key] = (model, tokenizer, device)
        return _LOADED[key]


class LocalModel:
    supports_json_schema = False
    supports_logprobs = True

    def __init__(self, cfg: Local) -> None:
        self.cfg = cfg
        self.usage = Usage()
        if cfg.path is None:
            self._path: Path | None = None  # resolved (converted on first use) when loading
            if not (cache_dir() / "models" / SMOLLM2_NAME).is_dir():
                bundled_smollm2_gguf()  # ConfigError now, not mid-run, when the package is missing
            self.identity = f"local bundled:{SMOLLM2_NAME}"
        else:
            path = Path(cfg.path).expanduser().resolve()
            if not path.exists():
                raise ConfigError(f"local model path {cfg.path} does not exist ({path})")
            self._path = path
            self.identity = f"local {path}"

    def _loaded(self) -> tuple[Any, Any, Any]:
        if self._path is None:
            self._path = smollm2_dir()
        return _load(self._path)

    # ------------------------------------------------------------------ public
    def complete(
        self, requests: Sequence[ChatRequest], on_done: OnDone | None = None, progress: str | None = None
    ) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        if not requests:
            return []
        model, tokenizer, device = self._loaded()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(requests), desc=progress, unit="req", dynamic_ncols=True)

        def finish(i: int, completion: Completion) -> None:
            results[i] = completion
            self.usage.add(completion)
            if on_done:
                on_done(i, completion)
            if bar is not None:
                bar.update(1)

        prompts: dict[int, list[int]] = {}
        extras: dict[int, dict[int, str]] = {}
        for i, request in enumerate(requests):
            try:  # a broken message list or label fails its item only
                extras[i] = self._extra_ids(tokenizer, request.logprob_tokens) if request.logprobs else {}
                prompts[i] = self._prompt_ids(tokenizer, request)
            except Exception as e:  # noqa: BLE001
                finish(i, _failed(e))
        # Same decoding mode in a batch; sorted by length so a batch pads little.
        groups: dict[tuple, list[int]] = {}
        for i in prompts:
            r = requests[i]
            groups.setdefault((r.max_tokens == 1, r.temperature == 0, r.logprobs), []).append(i)
        try:
            for members in groups.values():
                members.sort(key=lambda i: len(prompts[i]))
                for start in range(0, len(members), self.cfg.batch_size):
                    batch = members[start : start + self.cfg.batch_size]
                    try:
                        done = self._run(model, tokenizer, device, batch, requests, prompts, extras)
                    except Exception as e:  # noqa: BLE001
                        if len(batch) == 1:
                            done = [_failed(e)]
                        else:  # isolate the item that fails (e.g. out of memory on a long one)
                            done = []
                            for i in batch:
                                try:
                                    done += self._run(model, tokenizer, device, [i], requests, prompts, extras)
                                except Exception as e1:  # noqa: BLE001
                                    done.append(_failed(e1))
                    for i, completion in zip(batch, done, strict=True):
                        finish(i, completion)
        finally:
            if bar is not None:
                bar.close()
        return results  # type: ignore[return-value]

    # ----------------------------------------------------------------- helpers
    def _prompt_ids(self, tokenizer: Any, request: ChatRequest) -> list[int]:
        text = tokenizer.apply_chat_template(request.openai_messages(), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.cfg.max_length :]

    def _run(
        self,
        model: Any,
        tokenizer: Any,
        device: Any,
        batch: list[int],
        all_requests: Sequence[ChatRequest],
        all_prompts: dict[int, list[int]],
        all_extras: dict[int, dict[int, str]],
    ) -> list[Completion]:
        """One left-padded batch, all in the same decoding mode, decoded step by step."""
        import torch

        requests = [all_requests[i] for i in batch]
        prompts = [all_prompts[i] for i in batch]
        extra = [all_extras[i] for i in batch]
        n, width = len(prompts), max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _eos_ids(model, tokenizer)[0]
        input_ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        eos = set(_eos_ids(model, tokenizer))
        greedy = requests[0].temperature == 0
        generators = None
        temperatures = torch.tensor([[max(r.temperature, 1e-5)] for r in requests], device=device)
        if not greedy:
            generators = []
            for r in requests:
                seed = r.seed if r.seed is not None else int(r.key()[:15], 16)
                generators.append(torch.Generator(device=device).manual_seed(seed))
        steps = max(r.max_tokens for r in requests)
        generated: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[dict[str, float]]] = [[] for _ in range(n)]
        finished = [False] * n
        past = None
        with torch.inference_mode():
            for step in range(steps):
                out = model(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=steps > 1,
                    logits_to_keep=1,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                logsoft = torch.log_softmax(logits, dim=-1)
                if greedy:
                    chosen = logits.argmax(dim=-1)
                else:
                    probs = torch.softmax(logits / temperatures, dim=-1)
                    chosen = torch.stack(
                        [torch.multinomial(probs[row], 1, generator=generators[row])[0] for row in range(n)]
                    )
                chosen_list = chosen.tolist()
                for row, r in enumerate(requests):
                    if finished[row]:
                        continue
                    if r.logprobs:
                        logprobs[row].append(_position_logprobs(tokenizer, logsoft[row], r.top_logprobs, extra[row]))
                    token = chosen_list[row]
                    generated[row].append(token)
                    if token in eos or len(generated[row]) >= r.max_tokens:
                        finished[row] = True
                if all(finished) or step == steps - 1:
                    break
                input_ids = chosen.unsqueeze(-1)
                mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=-1)
                positions = positions[:, -1:] + 1
        completions = []
        for row, r in enumerate(requests):
            tokens = [t for t in generated[row] if t not in eos]
            completions.append(
                Completion(
                    text=tokenizer.decode(tokens, skip_special_tokens=True),
                    logprobs=logprobs[row] if r.logprobs else None,
                    prompt_tokens=len(prompts[row]),
                    completion_tokens=len(generated[row]),
                )
            )
        return completions

    @staticmethod
    def _extra_ids(tokenizer: Any, strings: Sequence[str]) -> dict[int, str]:
        """Token ids for logprob_tokens: the string itself and its leading-space variant, when
        either is a single token (a label must be one token; a spaced variant is optional)."""
        ids: dict[int, str] = {}
        for s in strings:
            exact = tokenizer.encode(s, add_special_tokens=False)
            if len(exact) != 1:
                raise ValueError(f"logprob token {s!r} is not a single token for this tokenizer ({len(exact)})")
            ids[exact[0]] = _key(s)
            spaced = tokenizer.encode(" " + s.lstrip(), add_special_tokens=False)
            if len(spaced) == 1:
                ids[spaced[0]] = _key(s)
        return ids


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in (configured if isinstance(configured, list) else [configured]) + [tokenizer.eos_token_id]:
        if value is not None and value not in ids:
            ids.append(value)
    return ids


def _key(text: str) -> str:
    """A token's text as endpoints report it: leading space markers stripped ("4", not " 4")."""
    stripped = text.strip()
    return stripped if stripped else text


def _position_logprobs(tokenizer: Any, logsoft: Any, top: int, extra: dict[int, str]) -> dict[str, float]:
    import torch

    _, ids = torch.topk(logsoft, k=max(1, min(top, logsoft.shape[-1])))
    chosen: dict[int, str] = {}
    for token_id in ids.tolist():
        chosen[token_id] = _key(tokenizer.decode([token_id]))
    for token_id, key in extra.items():
        chosen.setdefault(token_id, key)
    wanted = list(chosen)
    lp = logsoft[wanted].tolist()
    merged: dict[str, float] = {}
    for token_id, value in zip(wanted, lp, strict=True):
        key = chosen[token_id]
        merged[key] = value if key not in merged else _logaddexp(merged[key], value)
    return merged


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def _failed(e: Exception) -> Completion:
    return Completion(text=None, error=f"{type(e).__name__}: {e}"[:300])
