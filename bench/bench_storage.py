"""Ingest read speed: the same gzipped JSON Lines on local disk and on an S3 server on 127.0.0.1
(moto's server, as the tests use), read by curation.ingest into records.

    .venv/bin/python -m bench.bench_storage [DOCS]   (default 100,000 documents)
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(docs: int = 100_000) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://{host}:{port}")
    from curation.core.storage import RemotePath
    from curation.ingest import ingest
    from schemas.config import InputSpec

    rows = (json.dumps({"id": f"d{i}", "instruction": f"Question {i}: what is {i} squared?",
                        "output": f"The square of {i} is {i * i}. " * 4}) + "\n" for i in range(docs))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        parts = 10
        lines = list(rows)
        for p in range(parts):
            (folder / f"part{p:02d}.jsonl.gz").write_bytes(gzip.compress("".join(lines[p::parts]).encode(), 6))
        size = sum(f.stat().st_size for f in folder.iterdir())
        remote = RemotePath("s3://bench-bucket/in")
        remote.fs.mkdir("bench-bucket")
        remote.put(folder)
        load = os.getloadavg()[0]
        print(f"{docs:,} documents in {parts} gzipped JSON Lines files, {size / 1e6:.1f} MB; load average {load:.1f}")
        for name, path in (("local disk", str(folder)), ("S3 (moto, 127.0.0.1)", str(remote))):
            start = time.perf_counter()
            result = ingest([InputSpec(path=path)], progress=False, out=Path(tmp) / name.split()[0])
            seconds = time.perf_counter() - start
            print(f"{name:<22} {result.records.height:>9,} records  {seconds:6.1f} s  {docs / seconds:>9,.0f} docs/s")
    server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
