"""The input files a config names: expanded (a file, the data files of a directory, a glob, a URL
on its store), each refused unless it is a regular file outside the run's outputs, and every path
of a loaded config checked (`load_config`) before any work: one ConfigError naming the field.

The models (schemas.config) only read and resolve the config; what touches the filesystem or a
store is here, so `schemas` stays models."""

from __future__ import annotations

import errno
import glob
import stat
from collections.abc import Sequence
from pathlib import Path

from curation.core.storage import RemotePath, as_path, check_reachable, has_magic, is_remote, remote_glob
from schemas.base import ConfigError
from schemas.bundled import SEMANTIC_BUNDLED
from schemas.config import (
    COMPRESSION_SUFFIXES,
    RESOURCES,
    SUFFIX_FORMATS,
    CurateConfig,
    bundled_prompt,
    model_specs,
    read_config,
    resolve_path,
)

# In a directory input, files with these stems are about the data, not data.
NOT_DATA_STEMS = ("readme", "license", "licence", "copying", "notice", "changelog", "changes", "authors", "citation")

# Where the kernel serves files that are not data (/proc/self/environ holds the environment, keys
# included): never opened as inputs, whatever they look like to stat.
SPECIAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def load_config(path: str | Path) -> CurateConfig:
    """Read, validate and resolve a config file (schemas.config.read_config), then check every
    path it names; ConfigError (exit 2) with a readable message naming the field."""
    return check_paths(read_config(path))


def check_paths(config: CurateConfig) -> CurateConfig:
    """Every input and benchmark matches a file that may be read, and every file and model path
    the config names exists."""
    base = config.base_dir or Path.cwd()
    specs = [(f"inputs[{i}]", spec) for i, spec in enumerate(config.inputs)]
    benchmarks = config.decontamination.benchmarks if config.decontamination else []
    specs += [(f"decontamination.benchmarks[{i}]", bench) for i, bench in enumerate(benchmarks)]
    for where, spec in specs:
        try:
            found = expand_input(spec.path)
        except ConfigError as exc:
            raise ConfigError(f"{where}.path: {exc}") from None
        if not found:
            raise ConfigError(f"{where}.path: no file matches {spec.path}")
    keywords = config.filters.keywords if config.filters else None
    if keywords and keywords.exclude_file and not Path(keywords.exclude_file).is_file():
        raise ConfigError(f"filters.keywords.exclude_file: file not found: {keywords.exclude_file}")
    for where, model_path in _model_paths(config):
        resolved = as_path(resolve_path(model_path, base))
        if not resolved.exists():
            raise ConfigError(f"{where}: path not found: {resolved}")
    for where, model in model_specs(config):
        if model.local and model.local.path and not Path(model.local.path).exists():
            raise ConfigError(f"{where}.local.path: path not found: {model.local.path}")
    prompts = [(f"jury.judges[{i}].rubric", j.rubric, "rubrics") for i, j in enumerate(config.jury.judges)] if config.jury else []
    if config.preference and config.preference.pairwise:
        prompts.append(("preference.pairwise.rubric", config.preference.pairwise.rubric, "rubrics"))
    if config.synthesis:
        prompts.append(("synthesis.template", config.synthesis.template, "prompts"))
    for where, value, folder in prompts:
        if not (bundled_prompt(value, folder) or Path(resolve_path(value, base)).is_file()):
            bundled = sorted(p.stem for p in (RESOURCES / folder).glob("*.jinja"))
            raise ConfigError(f"{where}: {value!r} is neither a bundled prompt ({', '.join(bundled)}) nor a file")
    return config


def _model_paths(config: CurateConfig) -> list[tuple[str, str]]:
    found = []
    if config.filters and config.filters.length and config.filters.length.tokenizer:
        found.append(("filters.length.tokenizer", config.filters.length.tokenizer))
    if config.dedup and config.dedup.semantic and config.dedup.semantic.model not in (None, *SEMANTIC_BUNDLED):
        found.append(("dedup.semantic.model", config.dedup.semantic.model))
    semantic = config.decontamination.semantic if config.decontamination else None
    if semantic and semantic.model not in (None, *SEMANTIC_BUNDLED):
        found.append(("decontamination.semantic.model", semantic.model))
    if config.export and config.export.tokenizer:
        found.append(("export.tokenizer", config.export.tokenizer))
    if config.train and config.train.base_model:
        found.append(("train.base_model", config.train.base_model))
    if config.select and config.select.diversity.model not in (None, *SEMANTIC_BUNDLED):
        found.append(("select.diversity.model", config.select.diversity.model))
    if config.select and config.select.ifd and config.select.ifd.model:
        found.append(("select.ifd.model", config.select.ifd.model))
    return found


def expand_input(path: str) -> list[Path]:  # a RemotePath for each file of a URL input
    """The files an input path names: a file, the data files under a directory, or a glob;
    ConfigError naming the first that may not be opened (`input_refusal`), so no read of an
    input (ingest, validate, checkpoints, publish, benchmarks) ever opens a FIFO or a device.

    A directory written by `datasets.save_to_disk` counts as one input (its dataset_info.json
    marks it), so it is returned as the directory itself. In any other directory only data
    files are read (`is_data_file`); `skipped_in_dir` lists the rest (never opened).
    A URL (s3://...) is expanded on its store by the same rules (objects are regular files).
    """
    if is_remote(path):
        return _expand_remote(path)  # type: ignore[return-value]
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file():
            return [p]
        files = sorted(f for f in _dir_files(p) if is_data_file(f, p))
    elif p.exists() or p.is_symlink():
        files = [p]
    else:
        files = sorted(Path(m) for m in glob.glob(path, recursive=True))
    for f in files:
        if refusal := input_refusal(f):
            raise ConfigError(f"{f} is {refusal}: only regular files (and directories of them) are read as inputs")
    return files


def _expand_remote(url: str) -> list[RemotePath]:
    p = RemotePath(url)
    check_reachable(p, "input")  # a wrong credential or a missing bucket: one clear message, no traceback
    if has_magic(p.key):
        return remote_glob(url)
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file():
            return [p]
        return sorted(f for f in p.files() if is_data_file(f, p))  # type: ignore[arg-type]
    return [p] if p.exists() else []


def input_refusal(path: Path, outputs: Sequence[Path] = ()) -> str | None:
    """Why `path` may not be opened as an input, or None: the one check every input read goes
    through. Only a regular file (or a folder: a save_to_disk dataset), resolved through symlinks,
    outside /proc, /sys and /dev, and outside the run's `outputs`. Decided from stat alone: a FIFO
    is never opened (opening one blocks until something writes to it)."""
    try:
        mode = path.stat().st_mode  # follows symlinks: a link to a regular file is fine
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        return "a broken symlink" if path.is_symlink() else f"unreadable ({exc.strerror})"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file"
    real = path.resolve()
    for root in SPECIAL_ROOTS:
        if real.is_relative_to(root):
            return f"under {root} (a kernel file, not data)"
    for out in outputs:
        if not is_remote(out) and real.is_relative_to(Path(out).resolve()):  # a local file is in no bucket
            return f"inside the run's output {out}"
    return None


def _walk_root(path: str) -> Path | None:
    """The folder an input reads everything under: a directory, or a recursive glob's fixed part."""
    p = as_path(path)
    if p.is_dir():
        return p  # type: ignore[return-value]
    if "**" in path and isinstance(p, Path):  # a local path
        fixed = next(i for i, part in enumerate(p.parts) if any(c in part for c in "*?["))
        return Path(*p.parts[:fixed]) if fixed else Path(".")
    return None


def output_overlap(path: str, outputs: Sequence[Path]) -> str | None:
    """What is wrong when an input would read what the run writes: a file inside an output, or a
    directory (recursive glob) input holding one. None when they are apart."""
    root = _walk_root(path)
    for out in outputs:
        if root is not None and as_path(out).resolve().is_relative_to(root.resolve()):
            return f"{path} holds the run's output {out}: the run would read its own outputs; write them elsewhere"
    for f in expand_input(path):
        if is_remote(f):
            inside = [o for o in outputs if f.is_relative_to(as_path(o))]  # type: ignore[arg-type]
            if inside:
                return f"{f} is inside the run's output {inside[0]}"
        elif refusal := input_refusal(f, outputs):
            return f"{f} is {refusal}"
    return None


def skipped_in_dir(path: str) -> list[Path]:
    """The files of a directory input that are not read (see `is_data_file`); [] for anything else."""
    p = as_path(path)
    if not p.is_dir() or len(expand_input(path)) == 1 and expand_input(path)[0] == p:
        return []
    return sorted(f for f in _dir_files(p) if not is_data_file(f, p))  # type: ignore[arg-type]


def _dir_files(folder: Path | RemotePath) -> list[Path]:
    if isinstance(folder, RemotePath):
        return folder.files()  # type: ignore[return-value]
    return [f for f in folder.rglob("*") if not f.is_dir()]


def is_data_file(path: Path, folder: Path) -> bool:
    """The directory rule: a file whose name says a data format (optionally compressed), not
    hidden nor under a hidden folder, and not a README / LICENSE / NOTICE / CHANGELOG / ... file."""
    if any(part.startswith(".") for part in path.relative_to(folder).parts):
        return False
    name = path.name.lower()
    if name.split(".")[0] in NOT_DATA_STEMS:
        return False
    inner = Path(name).with_suffix("") if Path(name).suffix in COMPRESSION_SUFFIXES else Path(name)
    return inner.suffix in SUFFIX_FORMATS
