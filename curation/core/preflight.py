"""Everything a run can check before any work, so a fatal problem stops it in a second with one
message naming the field or path (ConfigError: exit 2) instead of a traceback after an hour:
the inputs (see curation.ingest.check_inputs), the benchmark files (their index is built), the
folders it writes (the run directory and the publish directory must be, or be creatable as,
writable directories; on object storage: a bucket these credentials reach and may write in)
and the templates (rubrics and the synthesis prompt compile in the sandbox and show what they
must)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from jinja2 import TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from curation.core.storage import RemotePath, as_path, check_reachable
from curation.ingest import check_inputs
from curation.jury.judge import compile_rubric, load_rubric
from curation.select.ifd import check_ifd_model
from curation.synthesis import load_prompt
from schemas.base import ConfigError
from schemas.config import CurateConfig


def preflight(config: CurateConfig, out: Path | None = None) -> None:
    """Raise ConfigError for the first fatal problem of `config` run into `out`."""
    outputs = tuple(as_path(p) for p in (out, config.publish and config.publish.dir) if p)
    check_inputs(config.inputs, outputs=outputs)  # an input inside them would read the run's own outputs
    if config.decontamination:  # the benchmark index is built (or read from its cache) here
        from curation.decontamination.index import build_index

        build_index(config.decontamination)
    if out is not None:
        writable_dir(as_path(out), "--out")
    if config.publish:
        publish_dir = as_path(config.publish.dir)
        if isinstance(publish_dir, RemotePath) and publish_dir.protocol not in ("s3", "s3a"):
            raise ConfigError(f"publish.dir {publish_dir}: its lock needs conditional writes, implemented for s3:// only")
        writable_dir(publish_dir, "publish.dir")
    check_templates(config)
    if config.select and config.select.ifd:
        check_ifd_model(config.select.ifd.model or (config.train.base_model if config.train else None))


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


def check_templates(config: CurateConfig) -> None:
    if config.jury:
        for judge in config.jury.judges:
            compile_rubric(judge.name, load_rubric(judge.rubric), config.jury.scale_max)
    if config.preference and config.preference.pairwise:
        compile_rubric("pairwise", load_rubric(config.preference.pairwise.rubric), 2, comparison=True)
    if config.synthesis:
        text = load_prompt(config.synthesis.template)
        try:
            variables = meta.find_undeclared_variables(SandboxedEnvironment().parse(text))
        except TemplateError as e:
            raise ConfigError(f"synthesis.template: {e}") from e
        if "chunk" not in variables:
            raise ConfigError("synthesis.template: the prompt never shows the text to write pairs from: use {{ chunk }}")
