"""Published versions: reading them, publishing version n+1 atomically, and the diff between two."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curation.core.inputs import expand_input
from curation.core.storage import RemotePath, as_path, readable
from curation.publish.indexes import (
    DedupCfg,
    Index,
    compute_index,
    concat,
    empty_index,
    enabled_indexes,
    index_axis,
    index_for,
    index_settings,
)
from curation.publish.inputs import file_digest, sha256, unconsumed
from schemas.base import ConfigError
from schemas.config import CurateConfig, Dedup
from schemas.record import RECORD_SCHEMA

log = logging.getLogger(__name__)
LATEST = "LATEST"
_VERSION = re.compile(r"^v(\d{4,})$")


class PublishError(RuntimeError):
    """A publish that would be wrong (ids clash, another refresh published first, broken dir)."""


def version_name(number: int) -> str:
    return f"v{number:04d}"


def latest_version(publish_dir: str | Path | RemotePath) -> int | None:
    """The number LATEST points at, or None before the first publish. Version folders without a
    LATEST are not "nothing published": a first publish killed before LATEST, or a removed
    pointer, cannot be told apart, so a ConfigError (exit 2) names them."""
    pointer = as_path(publish_dir) / LATEST
    if not pointer.is_file():
        found = _existing_versions(as_path(publish_dir))
        if found:
            names = ", ".join(version_name(n) for n in sorted(found))
            raise ConfigError(
                f"publish.dir: {publish_dir} holds {names} but no {LATEST}: a first publish that did not"
                f" finish, or a removed pointer. Write the version to build on into {LATEST}"
                f" (echo {version_name(max(found))} > {pointer}), or move the folders away to start over"
            )
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    match = _VERSION.match(name)
    if not match or not (as_path(publish_dir) / name / "manifest.json").is_file():
        raise PublishError(f"{pointer}: points at {name!r}, which is not a complete version")
    return int(match.group(1))


def version_dir(publish_dir: str | Path | RemotePath, number: int) -> Path | RemotePath:
    return as_path(publish_dir) / version_name(number)


@dataclass
class Version:
    """A published version: its records and manifest; indexes load (or rebuild) on demand."""

    dir: Path | RemotePath
    number: int
    kept: pl.DataFrame
    manifest: dict
    indexes: dict[str, Index] = field(default_factory=dict)
    # Index rows the dedup_published stage computed for the run's new records, reused by publish.
    fresh: dict[str, Index] = field(default_factory=dict)

    def index(self, kind: str, cfg: DedupCfg, progress: bool = False) -> Index:
        """The stored index of this kind if it was built with cfg's settings, else a rebuild
        from the records (in memory only: a published version is never written again)."""
        settings = index_settings(kind, cfg)
        cached = self.indexes.get(kind)
        if cached is not None and cached.settings == settings:
            return cached
        stored = read_json(self.dir / "index" / "index.json") if (self.dir / "index" / "index.json").is_file() else {}
        entry = stored.get(kind)
        if entry is not None and entry["settings"] == settings:
            ids = pl.read_parquet(readable(self.dir / "index" / f"{kind}_ids.parquet"))["id"].to_list()
            data = np.load(readable(self.dir / "index" / f"{kind}.npy"))
            if len(ids) != entry["rows"] or data.shape[index_axis(kind)] != len(ids):
                raise PublishError(f"{self.dir}/index: the {kind} index is damaged ({len(ids)} ids)")
            index = Index(kind, settings, ids, data)
        else:
            index = compute_index(kind, self.kept, cfg, progress)
            index.rebuilt = True
        self.indexes[kind] = index
        return index


def load_version(publish_dir: str | Path, number: int | None = None) -> Version | None:
    """Version `number` (default: the latest), or None when nothing is published yet."""
    if number is None:
        number = latest_version(publish_dir)
        if number is None:
            return None
        for newer in sorted(n for n in _existing_versions(as_path(publish_dir)) if n > number):
            log.warning(
                "%s: %s is newer than %s (%s) and was never published (a publish stopped before moving"
                " %s); it is left as it is and the next version is numbered after it",
                publish_dir, version_name(newer), LATEST, version_name(number), LATEST,
            )
    path = version_dir(publish_dir, number)
    if not (path / "manifest.json").is_file():
        raise PublishError(f"{path}: no such published version")
    return Version(path, number, pl.read_parquet(readable(path / "kept.parquet")), read_json(path / "manifest.json"))


def publish(
    into: str | Path | RemotePath,
    run_dir: str | Path,
    config: CurateConfig,
    previous: Version | None,
    inputs: list[Path | RemotePath] | None = None,
    progress: bool = False,
) -> Path | RemotePath:
    """Publish version n+1 from the run's kept.parquet on top of `previous` (version n, the
    one the run deduped against; None for the first version). Returns the new version's dir.

    `inputs`: the files the run ingested (default: the config's files that `previous` had not
    consumed, hashed now). Raises PublishError when another publish happened since `previous`
    was loaded, or when a run record reuses a published id.

    On object storage (no rename), the version is assembled in a local temporary folder,
    uploaded under a temporary prefix `.vNNNN.<random>/`, copied (server-side) to `vNNNN/` with
    its manifest last, and made visible by the one final write of LATEST.
    """
    publish_dir, run_dir = as_path(into), Path(run_dir)
    publish_dir.mkdir(parents=True, exist_ok=True)
    parent = previous.number if previous else None
    if latest_version(publish_dir) != parent:
        raise PublishError(
            f"{publish_dir}: the latest version is now {latest_version(publish_dir)}, but this run"
            f" was deduped against {parent}: run the refresh again"
        )
    run_kept = pl.read_parquet(run_dir / "kept.parquet").select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA)  # type: ignore[arg-type]
    old_kept = previous.kept if previous else pl.DataFrame(schema=RECORD_SCHEMA)
    clash = run_kept.filter(pl.col("id").is_in(old_kept["id"].implode()) | pl.col("id").is_duplicated())["id"]
    if clash.len():
        raise PublishError(f"run records reuse published or repeated ids: {clash.head(5).to_list()}")
    kept = pl.concat([old_kept, run_kept])
    number = max([parent or 0, *_existing_versions(publish_dir)]) + 1
    final = version_dir(publish_dir, number)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=None if isinstance(publish_dir, RemotePath) else publish_dir))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a published version is for readers
        kept.write_parquet(tmp / "kept.parquet")
        index_meta = _write_indexes(tmp / "index", config.dedup, previous, run_kept, progress)
        diff = diff_versions(old_kept, kept)
        _write_json(tmp / "diff.json", {"version": number, "parent": parent, **diff})
        if (run_dir / "stats.json").is_file():
            shutil.copyfile(run_dir / "stats.json", tmp / "run_stats.json")
        consumed = previous.manifest["inputs"] if previous else []
        fresh = (
            [file_digest(p) for p in inputs]
            if inputs is not None
            else unconsumed({"inputs": consumed}, [f for spec in config.inputs for f in expand_input(spec.path)])
        )
        manifest = {
            "version": number,
            "parent": parent,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_dir": str(run_dir.resolve()),
            "inputs": consumed + [{**d, "version": number} for d in fresh],
            "counts": {
                "records": kept.height,
                "added": len(diff["added"]),
                "removed": len(diff["removed"]),
                "score_shifts": len(diff["score_shifts"]),
                "by_kind": dict(kept.group_by("kind").len().sort("kind").iter_rows()),
            },
            "index": index_meta,
            "files": {str(p.relative_to(tmp)): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        _write_json(tmp / "manifest.json", manifest)
        if isinstance(final, RemotePath):
            _upload_version(tmp, final)
        else:
            os.rename(tmp, final)  # fails if the name is taken: never overwrite a version
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # (renamed away when local)
    _atomic_write(publish_dir / LATEST, final.name + "\n")
    return final


def _upload_version(local: Path, final: RemotePath) -> None:
    """A version folder onto object storage: uploaded under a temporary prefix (what a killed
    publish leaves there is removed as stale by the next lock holder), then copied server-side
    to its name, manifest.json last: a version folder holds a manifest only once it is whole."""
    if final.exists():
        raise PublishError(f"{final}: already exists; a version is never overwritten")
    staging = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}"
    try:
        staging.put(local)
        names = sorted(str(f.relative_to(local)) for f in local.rglob("*") if f.is_file())
        for name in sorted(names, key=lambda n: n == "manifest.json"):
            final.fs.copy((staging / name).key, (final / name).key)
    finally:
        staging.rmtree()


def _existing_versions(publish_dir: Path | RemotePath) -> list[int]:
    """Numbers of version dirs, including any a crashed publish left without moving LATEST."""
    if not publish_dir.is_dir():
        return []
    return [int(m.group(1)) for p in publish_dir.iterdir() if (m := _VERSION.match(p.name))]


def _write_indexes(
    folder: Path, dedup: Dedup | None, previous: Version | None, run_kept: pl.DataFrame, progress: bool
) -> dict:
    folder.mkdir()
    meta = {}
    for kind, cfg in enabled_indexes(dedup):
        old = previous.index(kind, cfg, progress) if previous else empty_index(kind, cfg)
        new = index_for(kind, run_kept, cfg, previous.fresh.get(kind) if previous else None, progress)
        index = concat([old, new]) if len(new) else old
        np.save(folder / f"{kind}.npy", index.data)
        pl.DataFrame({"id": index.ids}, schema={"id": pl.String}).write_parquet(folder / f"{kind}_ids.parquet")
        meta[kind] = {
            "settings": index.settings,
            "rows": len(index),
            "reused_rows": 0 if old.rebuilt else len(old),
            "computed_rows": len(index) - (0 if old.rebuilt else len(old)),
        }
    _write_json(folder / "index.json", meta)
    return meta


def diff_versions(old: pl.DataFrame, new: pl.DataFrame) -> dict:
    """What changed from `old` to `new` records: added and removed ids (in record order), and
    records in both whose meta.jury.score differs (old/new, null = unscored)."""
    old_ids, new_ids = set(old["id"].to_list()), set(new["id"].to_list())
    score = pl.col("meta").str.json_path_match("$.jury.score").cast(pl.Float64)
    both = (
        old.select("id", score.alias("old"))
        .join(new.select("id", score.alias("new")), on="id", how="inner", maintain_order="right")
        .filter(pl.col("old").ne_missing(pl.col("new")))
    )
    return {
        "added": [i for i in new["id"].to_list() if i not in old_ids],
        "removed": [i for i in old["id"].to_list() if i not in new_ids],
        "score_shifts": both.to_dicts(),
    }


def read_json(path: Path | RemotePath) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _atomic_write(path: Path | RemotePath, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over `path`; on object
    storage one PUT (readers see the old object or the new one, never a part)."""
    if isinstance(path, RemotePath):
        path.write_text(text)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the pointer is for readers, like the versions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
