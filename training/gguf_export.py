"""GGUF export of a merged model, for llama.cpp / Ollama, and the proof that it loads back right.

Written with the `gguf` library (the writer llama.cpp's own converter uses) for Llama-shaped
models, the architecture the bundled SmolLM2 and most small open models have, following
llama.cpp's `convert_hf_to_gguf.py`: its tensor names (`gguf.get_tensor_name_map`), the
rotary-embedding permutation of the query and key projections, a tied LM head left out
(llama.cpp reuses the token embedding), 1-D tensors (norms) in F32. The tokenizer goes in as a
GPT-2 style BPE (tokens, types, merges, special ids, chat template). `f16` stores every matrix in
half precision; `q8_0` quantises matrices in blocks of 32 weights with one scale each (the
`gguf.quants` reference implementation), matrices whose rows are not a multiple of 32 stay F16.

`verify_gguf` loads the file back with transformers (`gguf_file=`), which dequantises it, and
compares greedy generations with the merged model's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from schemas.train import TrainingInputError

GgufType = Literal["f16", "q8_0"]
FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
LLAMA_ARCHITECTURES = {"LlamaForCausalLM"}


def export_gguf(merged_dir: Path, out_file: Path, kind: GgufType) -> Path:
    """Write `merged_dir` (a plain Llama checkpoint with its tokenizer) as one GGUF file."""
    config = json.loads((merged_dir / "config.json").read_text())
    if set(config.get("architectures") or []) - LLAMA_ARCHITECTURES or config.get("model_type") != "llama":
        raise TrainingInputError(
            f"train.export_gguf: {merged_dir} is a {config.get('model_type')} model; the GGUF export"
            " handles Llama-shaped models (LlamaForCausalLM) only"
        )
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir, local_files_only=True)
    text = model.config
    n_head, n_kv = text.num_attention_heads, text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // n_head

    out_file.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_name(merged_dir.parent.name)
    writer.add_context_length(text.max_position_embeddings)
    writer.add_embedding_length(text.hidden_size)
    writer.add_block_count(text.num_hidden_layers)
    writer.add_feed_forward_length(text.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(_rope_theta(text))
    writer.add_layer_norm_rms_eps(text.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(text.vocab_size)
    writer.add_file_type(FILE_TYPES[kind])
    _add_tokenizer(writer, tokenizer, text.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, text.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and text.tie_word_embeddings:
            continue  # llama.cpp reads the LM head from token_embd when output.weight is absent
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise TrainingInputError(f"train.export_gguf: no GGUF name for tensor {name}")
        data = tensor.numpy()
        if name.endswith("q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        _add_tensor(writer, target, data, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def _rope_theta(config: object) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", 10000.0))


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """HF's rotary layout (halves) to llama.cpp's (interleaved pairs), as convert_hf_to_gguf does."""
    heads = n_head_kv if n_head_kv != n_head else n_head
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _add_tensor(writer: gguf.GGUFWriter, name: str, data: np.ndarray, kind: GgufType) -> None:
    if data.ndim == 1:
        writer.add_tensor(name, data.astype(np.float32))
    elif kind == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        q8 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, q8), raw_dtype=q8)
    else:
        writer.add_tensor(name, data.astype(np.float16))


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    if backend["model"]["type"] != "BPE":
        raise TrainingInputError("train.export_gguf: only byte-level BPE tokenizers (GPT-2 style) are exported")
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # a model's vocabulary padded past the tokenizer's
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        added = i in tokenizer.added_tokens_decoder
        types.append(
            gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if added else gguf.TokenType.NORMAL
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def export_and_verify(
    merged_dir: Path, kind: GgufType, prompts: list[list[dict[str, str]]], max_new_tokens: int
) -> dict[str, float | int | str]:
    """Export `merged_dir` to `<its folder>/model-<kind>.gguf` and check it on `prompts` (turns
    rendered with the model's chat template); without prompts, on one fixed question."""
    out = export_gguf(merged_dir, merged_dir.parent / f"model-{kind}.gguf", kind)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir, local_files_only=True)
    turns = prompts or [[{"role": "user", "content": "What is 2 + 2?"}]]
    ids = [tokenizer.apply_chat_template(t, add_generation_prompt=True, return_dict=False) for t in turns]
    return {"file": str(out), "type": kind, "bytes": out.stat().st_size, **verify_gguf(merged_dir, out, ids, max_new_tokens)}


def verify_gguf(
    merged_dir: Path, gguf_file: Path, prompts: list[list[int]], max_new_tokens: int
) -> dict[str, float | int]:
    """The GGUF file loaded back by transformers against the merged model: the largest weight
    difference from the merged weights rounded to half precision (0 for an exact f16 file; for
    q8_0 the quantisation error), and greedy generations prompt by prompt: how many are
    token-for-token identical, the share of generated positions that agree, and the largest
    difference of the logits over the prompts."""
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, local_files_only=True).eval()
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, local_files_only=True
    ).eval()
    expected = merged.state_dict()
    weight_diff = max(
        float((tensor - expected[name].half().float()).abs().max()) for name, tensor in loaded.state_dict().items()
    )
    identical, agree, positions, logit_diff = 0, 0, 0, 0.0
    for ids in prompts:
        a, logits_a = _greedy(merged, ids, max_new_tokens)
        b, logits_b = _greedy(loaded, ids, max_new_tokens)
        identical += a == b
        agree += sum(x == y for x, y in zip(a, b, strict=False))
        positions += max(len(a), len(b))
        logit_diff = max(logit_diff, float((logits_a - logits_b).abs().max()))
    return {
        "prompts": len(prompts),
        "identical_generations": identical,
        "token_agreement": agree / positions if positions else 1.0,
        "max_logit_diff": logit_diff,
        "max_weight_diff": weight_diff,
    }


def _greedy(model: PreTrainedModel, ids: list[int], max_new_tokens: int) -> tuple[list[int], torch.Tensor]:
    inputs = torch.tensor([ids])
    with torch.no_grad():
        logits = model(inputs).logits[0]
        out = model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=model.config.eos_token_id,
        )
    return out[0, len(ids) :].tolist(), logits
