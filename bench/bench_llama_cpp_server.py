"""The jury against the real llama-cpp-python OpenAI server: what the endpoint probe finds, and
whether rating then works without a wasted retry.

    python3 -m venv /tmp/lcp && /tmp/lcp/bin/pip install "llama-cpp-python[server]"   # builds llama.cpp (minutes)
    .venv/bin/python -m bench.bench_llama_cpp_server --server-python /tmp/lcp/bin/python [--records 20]

llama-cpp-python is not a dependency of the project (it compiles llama.cpp on install), so the
server runs from its own virtual environment, serving the bundled SmolLM2-135M-Instruct GGUF on
127.0.0.1. For each endpoint setting (json_schema on, logprobs on) one fresh EndpointModel runs
the probe and then the bundled helpfulness judge over --records sft records of the demo corpus.
Prints, per setting, the structured-output mode the probe chose, requests sent, errors by kind,
the ratings that came back and seconds; writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

from bench.stage_output import frame
from curation.ingest import ingest
from curation.jury.judge import RubricJudge, load_rubric
from curation.jury.stage import judge_item
from curation.llm.endpoint import EndpointModel
from schemas.base import StageFailed
from schemas.bundled import bundled_smollm2_gguf
from schemas.config import InputSpec
from schemas.jury import Endpoint

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(python: str, port: int) -> subprocess.Popen:
    command = [python, "-m", "llama_cpp.server", "--model", str(bundled_smollm2_gguf()), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--logits_all", "true"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the llama-cpp-python server did not come up in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-python", required=True, help="python of a venv with llama-cpp-python[server]")
    parser.add_argument("--records", type=int, default=20)
    args = parser.parse_args()
    records = frame(ingest([InputSpec(path=str(REPO / "data" / "sft"))], progress=False).records)
    items = [judge_item(r) for r in records.head(args.records).iter_rows(named=True)]
    port = free_port()
    server = start_server(args.server_python, port)
    results = []
    try:
        for setting in ({"json_schema": True}, {"json_schema": False, "logprobs": True}):
            cfg = Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model="smollm2", max_concurrency=1, timeout=120, **setting)
            model = EndpointModel(cfg)
            judge = RubricJudge("helpfulness", model, load_rubric("helpfulness"), max_chars=1000)
            start = time.perf_counter()
            try:
                ratings = judge.rate(items)
                outcome = None
            except StageFailed as exc:
                ratings, outcome = [], str(exc)
            row = {
                "setting": setting,
                "structured": model.structured,
                "stopped": outcome,
                "requests": model.usage.requests,
                "errors": dict(model.usage.by_error),
                "rated": sum(r.score is not None for r in ratings),
                "failed": dict(Counter(r.error for r in ratings if r.score is None)),
                "methods": dict(Counter(r.method for r in ratings if r.method)),
                "seconds": round(time.perf_counter() - start, 1),
            }
            results.append(row)
            print(json.dumps(row))
    finally:
        server.terminate()
        server.wait(30)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llama_cpp_server.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
