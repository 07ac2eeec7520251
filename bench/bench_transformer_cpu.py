"""The transformer encoder on a CPU: PyTorch against ONNX Runtime (fp32 and dynamic int8), in one run.

    cd /work/main && .venv/bin/pip install -e ".[bench]"   # onnx, onnxruntime (bench only)
    .venv/bin/python -m bench.bench_transformer_cpu [--docs 1000]

sentence-transformers' own `backend="onnx"` needs optimum-onnx, which pins transformers<4.58 (this
project runs 5.x), so the bundled all-MiniLM-L6-v2 is exported here with `torch.onnx.export` into
bench/results/ (offline) and quantised with `onnxruntime.quantization.quantize_dynamic`. Every
variant reads 128 tokens a text, sorted by length and batched by 64 (as sentence-transformers
does), mean pooling, L2 norm. Reported: docs/s on `--docs` documents of bench.corpus, the cosine
of each variant's vectors to PyTorch's, and paraphrase pair F1 (bench.paraphrases) at the best of
a few thresholds, so a speed-up is only counted at equal quality.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLDS = (0.75, 0.8, 0.85, 0.9)


def _torch_encoder():
    from curation.dedup.encoders import load_encoder

    encoder = load_encoder("all-MiniLM-L6-v2", 128)
    return lambda texts: encoder.encode(texts, 64)


def _onnx_encoder(quantised: bool):
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    from schemas.bundled import bundled_minilm_dir

    source = str(bundled_minilm_dir())
    tokenizer = AutoTokenizer.from_pretrained(source)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "minilm.onnx"
    if not path.is_file():
        model = AutoModel.from_pretrained(source).eval()

        class Hidden(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state

        names = ["input_ids", "attention_mask", "token_type_ids"]
        example = tokenizer(["hello world", "hi"], return_tensors="pt", padding=True)
        torch.onnx.export(Hidden(), tuple(example[k] for k in names), str(path), input_names=names,
                          output_names=["hidden"], dynamic_axes={k: {0: "batch", 1: "tokens"} for k in [*names, "hidden"]},
                          opset_version=17, dynamo=False)
    if quantised:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = RESULTS / "minilm.int8.onnx"
        if not int8.is_file():
            quantize_dynamic(str(path), str(int8), weight_type=QuantType.QInt8)
        path = int8
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), 384), np.float32)
        for lo in range(0, len(texts), 64):
            rows = order[lo : lo + 64]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=128, return_tensors="np")
            hidden = session.run(
                None, {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            )[0]
            mask = batch["attention_mask"][..., None]
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from bench.bench_semantic import pair_f1
    from bench.corpus import build_corpus
    from bench.paraphrases import build
    from curation.dedup.semantic import greedy_duplicates

    texts = build_corpus(args.docs, seed=0).texts
    para = build(progress=False)
    truth = para.labelled()
    variants = {"torch fp32": _torch_encoder(), "onnx fp32": _onnx_encoder(False), "onnx int8": _onnx_encoder(True)}
    result: dict = {"docs": args.docs, "loadavg_before": os.getloadavg(), "variants": {}}
    reference = None
    for name, encode in variants.items():
        encode(texts[:16])  # warm up
        start = time.perf_counter()
        vectors = encode(texts)
        seconds = time.perf_counter() - start
        reference = vectors if reference is None else reference
        cosine = (vectors * reference).sum(1)
        para_vectors = encode(para.texts)
        f1 = {}
        for t in THRESHOLDS:
            kept_as, _ = greedy_duplicates(para_vectors, t)
            dup = np.flatnonzero(kept_as != np.arange(len(para.texts)))
            f1[t] = pair_f1([[int(i), int(kept_as[i])] for i in dup], truth)["f1"]
        result["variants"][name] = {
            "docs_per_s": round(args.docs / seconds, 1),
            "cosine_to_torch_min": round(float(cosine.min()), 4),
            "cosine_to_torch_mean": round(float(cosine.mean()), 4),
            "paraphrase_f1": f1,
        }
    result["loadavg_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transformer_cpu.json").write_text(json.dumps(result, indent=2))
    base = result["variants"]["torch fp32"]["docs_per_s"]
    print("| variant | docs/s | vs torch | cosine to torch (min / mean) | best pair F1 |\n|---|---:|---:|---:|---:|")
    for name, r in result["variants"].items():
        best = max(r["paraphrase_f1"].items(), key=lambda kv: kv[1])
        print(f"| {name} | {r['docs_per_s']} | {r['docs_per_s'] / base:.2f}x | {r['cosine_to_torch_min']} / "
              f"{r['cosine_to_torch_mean']} | {best[1]} @ {best[0]} |")


if __name__ == "__main__":
    main()
