"""Versioned datasets with their dedup indexes: incremental refresh.

A publish directory holds numbered versions and a pointer to the newest:

```
PUBLISH_DIR/LATEST                 "v0002": the newest complete version (written last, atomically)
PUBLISH_DIR/v0001/kept.parquet     the whole dataset of that version (RECORD_SCHEMA)
                  manifest.json    version, parent, created, the input files consumed so far
                                   (path, size, sha256, version that consumed it), counts, the
                                   settings of every stored index, sha256 of every file written
                  index/index.json per index kind: the settings that produced it, its rows
                  index/<kind>.npy + <kind>_ids.parquet   exact: u64 keys [n]; minhash: u32
                                   signatures [num_perm, n]; semantic: f32 L2-normalised [n, dim]
                  diff.json        vs the parent: added ids, removed ids, jury score shifts
                  run_stats.json   stats.json of the run that produced the version
```

A refresh (1) ingests only the input files whose sha256 no published version consumed
(`refresh_inputs`); (2) runs the usual filters and in-run dedup on them; (3) the
`dedup_published` stage rejects the new records that duplicate a record of the latest version
(exact key, MinHash near duplicate, or embedding cosine, each with the run's dedup settings) or
reuse one of its ids; (4) jury, export, as usual; (5) `publish` writes version n+1 = version n's
records, unchanged and first, + the run's kept records, and extends the stored indexes: rows of
version n are reused, only the new records are hashed / signed / embedded (the stage's own
computations are reused when they are still in memory). An index stored under other settings
(view, normalisation, num_perm, ngram, model, ...) is rebuilt from the records, never reused.

Versions are append-only directories: a version is assembled under a temporary name, renamed
into place when complete, and only then does LATEST move to it, so a crash never leaves LATEST
pointing at a partial version; earlier versions are never written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curation.dedup import exact, minhash, semantic
from curation.core.stage import Stage, StageResult, split_rejects
from curation.core.text import text_view
from schemas.config import CurateConfig, Dedup, ExactDedup, InputSpec, MinHashDedup, SemanticDedup, expand_input
from schemas.record import RECORD_SCHEMA

STAGE = "dedup_published"
REASON = "duplicate_of_published"
ID_REASON = "published_id"  # a new record reusing the id of a published one (e.g. an edited row)
LATEST = "LATEST"
KINDS = ("exact", "minhash", "semantic")
_VERSION = re.compile(r"^v(\d{4,})$")

DedupCfg = ExactDedup | MinHashDedup | SemanticDedup


class PublishError(RuntimeError):
    """A publish that would be wrong (ids clash, another refresh published first, broken dir)."""


def version_name(number: int) -> str:
    return f"v{number:04d}"


# --- input files: what a version has consumed ------------------------------------------------


def file_digest(path: Path) -> dict:
    """path, size and sha256 of an input file; a directory input (hf_disk) hashes its files."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        size = 0
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(path)).encode() + b"\0" + _sha256(f).encode())
            size += f.stat().st_size
    else:
        size, digest = path.stat().st_size, None
    return {
        "path": str(path.resolve()),
        "size": size,
        "sha256": digest.hexdigest() if digest is not None else _sha256(path),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def new_inputs(publish_dir: str | Path, files: list[Path]) -> list[Path]:
    """The files whose content (sha256) the latest version has not consumed: a file that
    changed counts as new, a file that only moved does not. All of them before version 1."""
    number = latest_version(publish_dir)
    manifest = _read_json(version_dir(publish_dir, number) / "manifest.json") if number else {"inputs": []}
    return [Path(d["path"]) for d in _unconsumed(manifest, files)]


def refresh_inputs(publish_dir: str | Path, inputs: list[InputSpec]) -> list[InputSpec]:
    """The config's inputs narrowed to the files not consumed yet: one spec per new file, with
    the format and shape of the spec that named it. [] when there is nothing new."""
    fresh = {str(p) for p in new_inputs(publish_dir, [f for spec in inputs for f in expand_input(spec.path)])}
    out = []
    for spec in inputs:
        for f in expand_input(spec.path):
            if str(Path(f).resolve()) in fresh:
                out.append(spec.model_copy(update={"path": str(f)}))
    return out


def _unconsumed(manifest: dict, files: list[Path]) -> list[dict]:
    seen = {d["sha256"] for d in manifest.get("inputs", [])}
    out = []
    for f in files:
        d = file_digest(f)
        if d["sha256"] not in seen:
            seen.add(d["sha256"])  # the same content twice in one refresh: consumed once
            out.append(d)
    return out


# --- reading versions ------------------------------------------------------------------------


def latest_version(publish_dir: str | Path) -> int | None:
    """The number LATEST points at, or None before the first publish."""
    pointer = Path(publish_dir) / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    match = _VERSION.match(name)
    if not match or not (Path(publish_dir) / name / "manifest.json").is_file():
        raise PublishError(f"{pointer}: points at {name!r}, which is not a complete version")
    return int(match.group(1))


def version_dir(publish_dir: str | Path, number: int) -> Path:
    return Path(publish_dir) / version_name(number)


@dataclass
class Index:
    """One kind of dedup index over a version's records, in the version's record order."""

    kind: str
    settings: dict
    ids: list[str]
    data: np.ndarray  # exact: u64 [n]; minhash: u32 [num_perm, n]; semantic: f32 [n, dim]
    rebuilt: bool = False  # computed from the records because none was stored for these settings

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Version:
    """A published version: its records and manifest; indexes load (or rebuild) on demand."""

    dir: Path
    number: int
    kept: pl.DataFrame
    manifest: dict
    indexes: dict[str, Index] = field(default_factory=dict)
    # Index rows the dedup_published stage computed for the run's new records, reused by publish.
    fresh: dict[str, Index] = field(default_factory=dict)

    def index(self, kind: str, cfg: DedupCfg, progress: bool = False) -> Index:
        """The stored index of this kind if it was built with cfg's settings, else a rebuild
        from the records (in memory only: a published version is never written again)."""
        settings = _settings(kind, cfg)
        cached = self.indexes.get(kind)
        if cached is not None and cached.settings == settings:
            return cached
        stored = _read_json(self.dir / "index" / "index.json") if (self.dir / "index" / "index.json").is_file() else {}
        entry = stored.get(kind)
        if entry is not None and entry["settings"] == settings:
            ids = pl.read_parquet(self.dir / "index" / f"{kind}_ids.parquet")["id"].to_list()
            data = np.load(self.dir / "index" / f"{kind}.npy")
            if len(ids) != entry["rows"] or data.shape[_axis(kind)] != len(ids):
                raise PublishError(f"{self.dir}/index: the {kind} index is damaged ({len(ids)} ids)")
            index = Index(kind, settings, ids, data)
        else:
            index = compute_index(kind, self.kept, cfg, progress)
            index.rebuilt = True
        self.indexes[kind] = index
        return index


def load_version(publish_dir: str | Path, number: int | None = None) -> Version | None:
    """Version `number` (default: the latest), or None when nothing is published yet."""
    number = number if number is not None else latest_version(publish_dir)
    if number is None:
        return None
    path = version_dir(publish_dir, number)
    if not (path / "manifest.json").is_file():
        raise PublishError(f"{path}: no such published version")
    return Version(path, number, pl.read_parquet(path / "kept.parquet"), _read_json(path / "manifest.json"))


# --- indexes ---------------------------------------------------------------------------------


def enabled_indexes(dedup: Dedup | None) -> list[tuple[str, DedupCfg]]:
    """The index kinds a config's dedup section asks for, cheapest first."""
    if dedup is None:
        return []
    return [(kind, cfg) for kind in KINDS if (cfg := getattr(dedup, kind)) is not None]


def _settings(kind: str, cfg: DedupCfg) -> dict:
    module = {"exact": exact, "minhash": minhash, "semantic": semantic}[kind]
    return json.loads(json.dumps(module.index_settings(cfg)))  # as read back from index.json


def _axis(kind: str) -> int:
    return 1 if kind == "minhash" else 0


def compute_index(kind: str, records: pl.DataFrame, cfg: DedupCfg, progress: bool = False) -> Index:
    """Hash / sign / embed records (those with a non-blank view text) for an index."""
    ids = records["id"]
    if kind == "exact":
        rows, data = exact.index_keys(records, cfg)  # type: ignore[arg-type]
    elif kind == "minhash":
        texts = records.select(text_view(cfg.view)).to_series()
        rows, data = minhash.index_signatures(texts, cfg, progress)  # type: ignore[arg-type]
    else:
        texts = records.select(text_view(cfg.view)).to_series()
        rows = np.flatnonzero((texts.str.strip_chars() != "").to_numpy())
        data = semantic.embed(texts.gather(rows).to_list(), cfg, progress) if len(rows) else None  # type: ignore[arg-type]
        data = np.asarray(data, np.float32) if data is not None else np.zeros((0, 0), np.float32)
    return Index(kind, _settings(kind, cfg), ids.gather(rows).to_list(), data)


def _take(index: Index, positions: np.ndarray) -> Index:
    data = index.data[:, positions] if index.kind == "minhash" else index.data[positions]
    return Index(index.kind, index.settings, [index.ids[p] for p in positions], data)


def _concat(parts: list[Index]) -> Index:
    nonempty = [p for p in parts if len(p)] or parts[:1]
    data = np.concatenate([p.data for p in nonempty], axis=_axis(parts[0].kind))
    return Index(parts[0].kind, parts[0].settings, [i for p in nonempty for i in p.ids], data)


def index_for(kind: str, records: pl.DataFrame, cfg: DedupCfg, fresh: Index | None, progress: bool = False) -> Index:
    """The index rows of `records`, in their order: rows already in `fresh` (same settings) are
    taken from it, only the others are computed."""
    settings = _settings(kind, cfg)
    position = {rid: i for i, rid in enumerate(fresh.ids)} if fresh is not None and fresh.settings == settings else {}
    ids = records["id"].to_list()
    have = np.array([rid in position for rid in ids], bool)
    computed = compute_index(kind, records.filter(pl.Series(~have)), cfg, progress)
    if not have.any():
        return computed
    reused = _take(fresh, np.array([position[rid] for rid in np.array(ids, object)[have]], np.int64))  # type: ignore[arg-type]
    merged = _concat([reused, computed]) if len(computed) else reused
    row = {rid: i for i, rid in enumerate(ids)}
    return _take(merged, np.argsort([row[rid] for rid in merged.ids], kind="stable"))


def _empty_index(kind: str, cfg: DedupCfg) -> Index:
    return compute_index(kind, pl.DataFrame(schema=RECORD_SCHEMA), cfg)


# --- the dedup_published stage ---------------------------------------------------------------


def build_published_stage(previous: Version | None, dedup: Dedup | None, progress: bool = True) -> Stage:
    """Reject new records that duplicate a record of the published `previous` version.

    Runs after the in-run dedup stages. Per enabled index kind, cheapest first, on the records
    no earlier kind matched: exact keys, MinHash candidates verified like the in-run stage, then
    embedding cosine >= threshold (the in-run search: exhaustive, IVF past 65k). A match is
    rejected as `duplicate_of_published` with duplicate_of = the earliest matching published
    record (semantic: the closest one); the detail names the kind, the similarity and the version. Then a surviving record whose id is
    already published is rejected as `published_id` (a version's ids stay unique). With no
    previous version (the first publish) every record is kept.
    """

    def run(records: pl.DataFrame) -> StageResult:
        n = records.height
        reason, detail, dup = [None] * n, [None] * n, [None] * n
        extra: dict[str, Any] = {"published_version": previous.number if previous else None}
        if previous is not None:
            name = version_name(previous.number)
            pending = np.ones(n, bool)
            old_row = {rid: i for i, rid in enumerate(previous.kept["id"].to_list())}
            matched: dict[str, int] = {}
            rebuilt = []
            for kind, cfg in enabled_indexes(dedup):
                old = previous.index(kind, cfg, progress)
                if old.rebuilt:
                    rebuilt.append(kind)
                rows = np.flatnonzero(pending)
                subset = records[rows]
                new = compute_index(kind, subset, cfg, progress)
                previous.fresh[kind] = new
                new_rows = {rid: i for i, rid in enumerate(subset["id"].to_list())}
                at = np.array([new_rows[rid] for rid in new.ids], np.int64)  # subset rows of new
                hits, labels = _match(kind, cfg, subset, at, new, previous, old, old_row)
                for k, (pos, label) in enumerate(zip(hits, labels)):
                    if pos < 0:
                        continue
                    i = rows[at[k]]
                    reason[i], dup[i] = REASON, old.ids[pos]
                    detail[i] = f"{kind}: {label} in {name}"
                    pending[i] = False
                matched[kind] = int((hits >= 0).sum())
            for i in np.flatnonzero(pending):
                rid = records["id"][int(i)]
                if rid in old_row:
                    reason[i], dup[i], detail[i] = ID_REASON, rid, f"id already published in {name}"
            extra.update(matched=matched, id_conflicts=sum(r == ID_REASON for r in reason), rebuilt_indexes=rebuilt)
        result = split_rejects(
            records,
            STAGE,
            pl.Series(reason, dtype=pl.String),
            pl.Series(detail, dtype=pl.String),
            pl.Series(dup, dtype=pl.String),
        )
        result.extra = extra
        return result

    return Stage(STAGE, run, reads=tuple(RECORD_SCHEMA))


def _match(
    kind: str,
    cfg: DedupCfg,
    subset: pl.DataFrame,
    at: np.ndarray,
    new: Index,
    previous: Version,
    old: Index,
    old_row: dict[str, int],
) -> tuple[np.ndarray, list[str]]:
    """Per row of `new`: the position in `old` it duplicates (-1: none), and a label."""
    if kind == "exact":
        hits = exact.match_index(new.data, old.data)
        return hits, ["same text after normalising " + (", ".join(cfg.normalize) or "nothing")] * len(hits)  # type: ignore[union-attr]
    if kind == "minhash":
        texts = subset.select(text_view(cfg.view)).to_series()
        old_texts = previous.kept.select(text_view(cfg.view)).to_series()
        old_docs = np.array([old_row[rid] for rid in old.ids], np.int64)
        match, score = minhash.match_index(texts, at, new.data, old_texts, old_docs, old.data, cfg)  # type: ignore[arg-type]
        hits, score = match[at], score[at]
        label = "jaccard {:.2f}" if cfg.verify else "minhash estimate of jaccard {:.2f}"  # type: ignore[union-attr]
        return hits, [label.format(s) for s in score]
    if not len(new) or not len(old):
        return np.full(len(new), -1, np.int64), [""] * len(new)
    hits, cosine = semantic.match_index(new.data, old.data, cfg.threshold)  # type: ignore[union-attr]
    return hits, [f"cosine {c:.3f}" for c in cosine]


# --- publishing ------------------------------------------------------------------------------


def publish(
    publish_dir: str | Path,
    run_dir: str | Path,
    config: CurateConfig,
    previous: Version | None,
    inputs: list[Path] | None = None,
    progress: bool = False,
) -> Path:
    """Publish version n+1 from the run's kept.parquet on top of `previous` (version n, the
    one the run deduped against; None for the first version). Returns the new version's dir.

    `inputs`: the files the run ingested (default: the config's files that `previous` had not
    consumed, hashed now). Raises PublishError when another publish happened since `previous`
    was loaded, or when a run record reuses a published id.
    """
    publish_dir, run_dir = Path(publish_dir), Path(run_dir)
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=publish_dir))
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
            else _unconsumed({"inputs": consumed}, [f for spec in config.inputs for f in expand_input(spec.path)])
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
            "files": {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        _write_json(tmp / "manifest.json", manifest)
        os.rename(tmp, final)  # fails if the name is taken: never overwrite a version
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write(publish_dir / LATEST, final.name + "\n")
    return final


def _existing_versions(publish_dir: Path) -> list[int]:
    """Numbers of version dirs, including any a crashed publish left without moving LATEST."""
    return [int(m.group(1)) for p in publish_dir.iterdir() if (m := _VERSION.match(p.name))]


def _write_indexes(
    folder: Path, dedup: Dedup | None, previous: Version | None, run_kept: pl.DataFrame, progress: bool
) -> dict:
    folder.mkdir()
    meta = {}
    for kind, cfg in enabled_indexes(dedup):
        old = previous.index(kind, cfg, progress) if previous else _empty_index(kind, cfg)
        new = index_for(kind, run_kept, cfg, previous.fresh.get(kind) if previous else None, progress)
        index = _concat([old, new]) if len(new) else old
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


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
