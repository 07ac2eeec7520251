"""Checkpoints: each finished stage's output under RUN_DIR/.checkpoints/, valid for one fingerprint.

A fingerprint chains what a stage's output depends on: the input files (ingest), then for each
stage the previous stage's key, its name and its config sections. A re-run into the same RUN_DIR
reuses every checkpoint whose key still matches and recomputes from the first one that does not.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from curation.core.corpus import Corpus, CorpusWriter, Source
from curation.core.inputs import expand_input
from curation.core.stats import StageStats
from curation.core.storage import RemotePath, as_path
from schemas.config import CurateConfig

CHECKPOINTS = ".checkpoints"
FORMAT = "curate-checkpoint-2"  # part of every key: bump it when a stage's output format changes
HASH_LIMIT = 64 << 20  # input files up to this size are hashed; larger ones: size and mtime


@dataclass(frozen=True)
class Checkpoint:
    """A finished stage's output in RUN_DIR/.checkpoints/<nn>-<stage>/, valid for one fingerprint.

    `records/` is the corpus the stage kept (for ingest: the records; for a step that adds
    records: what it added), `rejected/` what it removed, `manifest.json` its stats, its
    fingerprint and the side files it wrote. The folder is renamed into place when complete, so a
    killed run leaves either a whole checkpoint or none.
    """

    run_dir: Path
    index: int
    stage: str
    key: str
    batch_size: int = 10_000  # rows per shard
    side_output: str | None = None  # a folder under RUN_DIR the stage writes (part of its output)

    on_disk = True

    @property
    def scratch(self) -> Path:
        """Where stages write the corpora they derive before the checkpoint takes them."""
        return scratch_dir(self.run_dir)

    @property
    def dir(self) -> Path:
        return self.run_dir / CHECKPOINTS / f"{self.index:02d}-{self.stage}"

    def manifest(self) -> dict | None:
        """The manifest if this checkpoint is complete, for this fingerprint, with its side files."""
        try:
            manifest = json.loads((self.dir / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        files = [self.dir / f for f in manifest.get("frames", [])] + [self.run_dir / f for f in manifest.get("outputs", [])]
        if manifest.get("key") != self.key or not all(f.exists() for f in files):
            return None
        return manifest

    def save(self, records: Source, rejected: Source | None, stats: StageStats | dict) -> dict:
        """Moves corpora into the checkpoint (they leave the scratch dir); writes frames."""
        partial = self.dir.with_name(self.dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        frames = {"records": records, "rejected": rejected}
        for name, frame in frames.items():
            if isinstance(frame, Corpus) and frame.dir.is_relative_to(self.scratch):
                frame.move(partial / name)
            elif isinstance(frame, Corpus):  # not this run's to take (e.g. an earlier checkpoint)
                shutil.copytree(frame.dir, partial / name)
            elif frame is not None:
                writer = CorpusWriter(partial / name, self.batch_size, self.scratch, frame.schema)
                writer.write(frame)
                writer.close()
        side = self.side_output
        outputs = (
            sorted(str(f.relative_to(self.run_dir)) for f in (self.run_dir / side).rglob("*") if f.is_file())
            if side and (self.run_dir / side).is_dir()
            else []
        )
        manifest = {
            "stage": self.stage,
            "key": self.key,
            "frames": [name for name, frame in frames.items() if frame is not None],
            "outputs": outputs,
            "stats": stats_json(stats),
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(self.dir, ignore_errors=True)
        partial.rename(self.dir)
        return manifest

    def discard(self) -> None:
        """Remove this checkpoint's corpora (a re-run recomputes it)."""
        for frames in ("records", "rejected"):
            shutil.rmtree(self.dir / frames, ignore_errors=True)

    def load(self) -> tuple[Corpus, Corpus | None, dict]:
        manifest = self.manifest()
        if manifest is None:
            raise RuntimeError(f"{self.dir}: checkpoint missing or stale after its task ran")
        rejected = self.dir / "rejected"
        return (
            Corpus.open(self.dir / "records", self.batch_size, self.scratch),
            Corpus.open(rejected, self.batch_size, self.scratch) if rejected.is_dir() else None,
            manifest["stats"],
        )


@dataclass
class HeldCheckpoint:
    """A step's output held in this process instead of on disk: the in-memory storage choice
    (`run_pipeline(..., in_memory=True)`). The same steps, ledger and stats as a Checkpoint, as
    DataFrames, with nothing to resume from."""

    run_dir: Path
    index: int
    stage: str
    key: str
    side_output: str | None = None
    held: tuple[Source, Source | None, dict] | None = None

    on_disk = False

    @property
    def scratch(self) -> Path:
        return scratch_dir(self.run_dir)

    def manifest(self) -> dict | None:
        return None if self.held is None else {"stage": self.stage, "key": self.key, "stats": self.held[2]}

    def save(self, records: Source, rejected: Source | None, stats: StageStats | dict) -> dict:
        self.held = (records, rejected, stats_json(stats))
        manifest = self.manifest()
        assert manifest is not None
        return manifest

    def discard(self) -> None:
        """Nothing on disk to remove."""

    def load(self) -> tuple[Source, Source | None, dict]:
        if self.held is None:
            raise RuntimeError(f"{self.stage}: no output held after its step ran")
        return self.held


def stats_json(stats: StageStats | dict) -> dict:
    """A step's figures as plain JSON values, as a manifest stores them."""
    if isinstance(stats, StageStats):
        return stats.model_dump(mode="json", by_alias=True)
    return json.loads(json.dumps(stats, default=str))


def scratch_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS / ".scratch"


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def input_fingerprint(config: CurateConfig) -> str:
    """The ingest key: the inputs section and every input file (size + sha256, or size + mtime)."""
    parts = [FORMAT, "ingest", json.dumps([s.model_dump(mode="json") for s in config.inputs], sort_keys=True)]
    parts.append(str(config.base_dir))  # records' `source` is relative to it
    for spec in config.inputs:
        for path in expand_input(spec.path):
            parts += _file_fingerprints(path)
    return digest(*parts)


def _file_fingerprints(path: Path) -> list[str]:
    """Per file under `path`: its resolved path, size and sha256 (or mtime when large); for a
    remote file its URL, size and the store's content tag (ETag): no second read of its bytes."""
    if isinstance(path, RemotePath):
        return [f"{f} {info['size']} {info.get('ETag') or info.get('etag', '')}"
                for f in (path.files() if path.is_dir() else [path]) for info in [f.fs.info(f.key)]]
    parts = []
    for f in sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]:
        st = f.stat()
        content = _file_sha256(f) if st.st_size <= HASH_LIMIT else f"mtime {st.st_mtime_ns}"
        parts.append(f"{f.resolve()} {st.st_size} {content}")
    return parts


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_fingerprint(
    previous: str, name: str, sections: tuple[str, ...], config: CurateConfig, files: tuple[str, ...] = ()
) -> str:
    """A stage's key: the previous stage's key, its name, its config sections (dotted paths) and
    the files it reads besides the records (their contents)."""
    values: dict = {}
    for dotted in sections:
        value = config
        for attr in dotted.split("."):
            if value is not None and not hasattr(value, attr):
                raise KeyError(f"stage {name}: no config section {dotted!r}")  # a typo in the plan
            value = getattr(value, attr, None) if value is not None else None
        values[dotted] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    contents = [part for f in files for part in _file_fingerprints(as_path(f))]
    return digest(FORMAT, previous, name, json.dumps(values, sort_keys=True, default=str), *contents)
