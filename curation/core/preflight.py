"""Everything a run can check before any work, so a fatal problem stops it in a second with one
message naming the field or path (ConfigError: exit 2) instead of a traceback after an hour:
the inputs (see curation.ingest.check_inputs), the folders it writes (the run directory and the
publish directory must be, or be creatable as, writable directories; on object storage: a bucket
these credentials reach and may write in), then each planned step's own check, declared on its
line of the plan (the benchmark index is built, rubrics and the synthesis prompt compile in the
sandbox and show what they must, the IFD model is a model)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from curation.core.plan import PlanContext, check_inputs, planned
from curation.core.storage import RemotePath, as_path, check_reachable
from schemas.base import ConfigError
from schemas.config import CurateConfig


def preflight(config: CurateConfig, out: Path | None = None) -> None:
    """Raise ConfigError for the first fatal problem of `config` run into `out`: the inputs, the
    folders it writes, then each planned step's own check (curation/core/plan.py STEPS), in order."""
    outputs = tuple(as_path(p) for p in (out, config.publish and config.publish.dir) if p)
    check_inputs(config, outputs)  # an input inside them would read the run's own outputs
    if out is not None:
        writable_dir(as_path(out), "--out")
    if config.publish:
        publish_dir = as_path(config.publish.dir)
        if isinstance(publish_dir, RemotePath) and publish_dir.protocol not in ("s3", "s3a"):
            raise ConfigError(f"publish.dir {publish_dir}: its lock needs conditional writes, implemented for s3:// only")
        writable_dir(publish_dir, "publish.dir")
    for spec in planned(PlanContext(config, Path())):  # no step is built here
        if spec.preflight is not None:
            spec.preflight(config)


def writable_dir(path: Path | RemotePath, what: str) -> None:
    """`path` is a directory this process can write in, or can be created as one; on object
    storage, a prefix of a bucket these credentials can list and write in."""
    if isinstance(path, RemotePath):
        check_reachable(path, what)
        probe = path / f".curate-preflight-{uuid.uuid4().hex}"
        try:  # a real write, as below: read-only credentials answer here
            probe.write_bytes(b"")
            probe.unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(f"{what} {path}: cannot write there ({type(exc).__name__})") from None
        return
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError(f"{what} {path}: {existing} is a broken symlink")
        existing = existing.parent
    if not existing.is_dir():
        where = "exists and is not a directory" if existing == path else f"{existing} is not a directory"
        raise ConfigError(f"{what} {path}: {where}")
    try:  # a real write: permissions, read-only mounts and ACLs all answer here
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot write in {existing} ({exc.strerror})") from None
