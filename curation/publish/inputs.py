"""The input files a published version has consumed: digests, and which files are new."""

from __future__ import annotations

import hashlib
from pathlib import Path

from curation.core.inputs import expand_input
from curation.core.storage import RemotePath, as_path, files_under, size_of
from schemas.config import InputSpec


def file_digest(path: Path | RemotePath) -> dict:
    """path, size and sha256 of an input file; a directory input (hf_disk) hashes its files."""
    path = as_path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        size = 0
        for f in files_under(path):
            digest.update(str(f.relative_to(path)).encode() + b"\0" + sha256(f).encode())  # type: ignore[arg-type]
            size += size_of(f)
    else:
        size, digest = size_of(path), None
    return {
        "path": str(path.resolve()),
        "size": size,
        "sha256": digest.hexdigest() if digest is not None else sha256(path),
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def new_inputs(publish_dir: str | Path, files: list[Path]) -> list[Path]:
    """The files whose content (sha256) the latest version has not consumed: a file that
    changed counts as new, a file that only moved does not. All of them before version 1."""
    from curation.publish.versions import latest_version, read_json, version_dir  # versions use digests

    number = latest_version(publish_dir)
    manifest = read_json(version_dir(publish_dir, number) / "manifest.json") if number else {"inputs": []}
    return [as_path(d["path"]) for d in unconsumed(manifest, files)]


def refresh_inputs(publish_dir: str | Path, inputs: list[InputSpec]) -> list[InputSpec]:
    """The config's inputs narrowed to the files not consumed yet: one spec per new file, with
    the format and shape of the spec that named it. [] when there is nothing new."""
    fresh = {str(p) for p in new_inputs(publish_dir, [f for spec in inputs for f in expand_input(spec.path)])}
    out = []
    for spec in inputs:
        for f in expand_input(spec.path):
            if str(as_path(f).resolve()) in fresh:
                out.append(spec.model_copy(update={"path": str(f)}))
    return out


def unconsumed(manifest: dict, files: list[Path]) -> list[dict]:
    seen = {d["sha256"] for d in manifest.get("inputs", [])}
    out = []
    for f in files:
        d = file_digest(f)
        if d["sha256"] not in seen:
            seen.add(d["sha256"])  # the same content twice in one refresh: consumed once
            out.append(d)
    return out
