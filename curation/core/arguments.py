"""`curate` command line: run, train, serve or validate a config.

Its arguments, and the checks a command makes before any work (the config, the run directory
it writes or trains on): plain argparse and the core's checks, no Prefect. flows/cli.py runs
the commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from curation.core.inputs import load_config
from curation.core.preflight import preflight
from curation.core.rundirs import latest_run_dir, new_run_dir, runs_dir
from curation.core.sections import steps_line
from curation.core.storage import RemotePath, as_path, check_reachable
from schemas.config import ConfigError

OUT_HELP = (
    "run directory (default: a new runs/<config>-<time> beside the config, per invocation). Re-running an"
    " unchanged config with the same --out resumes: finished stages are restored from OUT/.checkpoints/"
    " (an s3:// URL too, from another machine)"
)
FRESH_HELP = "ignore the checkpoints in --out and recompute every stage"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    curating = argparse.ArgumentParser(add_help=False)  # what `run` and `all` share
    curating.add_argument("config", type=Path)
    curating.add_argument("--out", type=as_path, help=OUT_HELP)
    curating.add_argument("--no-progress", action="store_true", help="hide progress bars")
    curating.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    commands.add_parser("run", parents=[curating], help=f"curate: {steps_line()}")
    train = commands.add_parser("train", help="SFT, then DPO (per train.method) on a curated run")
    train.add_argument("config", type=Path)
    train.add_argument(
        "--data", type=as_path,
        help="curated run directory or its URL"
        " (default: the latest run under runs/ beside CONFIG made from this very config file)",
    )
    train.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    everything = commands.add_parser("all", parents=[curating], help="curate, then train: one command")
    everything.add_argument("--no-resume", action="store_true", help="start training over")
    validate = commands.add_parser("validate", help="check a config and its inputs, run nothing")
    validate.add_argument("config", type=Path)
    serve = commands.add_parser(
        "serve", help="serve a scheduled deployment of the curate flow (needs a Prefect server; Ctrl-C stops it)"
    )
    serve.add_argument("config", type=Path)
    when = serve.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='cron schedule, e.g. "0 3 * * *" (03:00 daily)')
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS")
    serve.add_argument(
        "--runs", type=Path, help="each run writes RUNS/<config>-<time>/ (default: runs/ beside the config)"
    )
    serve.add_argument("--name", help="deployment name (default: the config file's stem)")
    report = commands.add_parser("report", help="(re)write RUN_DIR/report.html, the quality report")
    report.add_argument("run_dir", type=Path)
    return parser


def run_dir(config_path: Path, out: Path | None, train: bool = False) -> Path:
    """The run directory `curate run` (`all` with `train`) writes: --out or a new one beside the
    config, checked with the config and its inputs before any work (exit 2)."""
    config = load_config(config_path)
    if train and config.train is None:
        raise ConfigError(f"{config_path}: `curate all` needs a `train:` section (or use `curate run`)")
    out = out or new_run_dir(config_path)
    preflight(config, out)  # every fatal problem surfaces before any work
    return out


def runs_folder(config_path: Path, runs: Path | None) -> Path:
    """The folder `curate serve`'s runs go in: --runs or runs/ beside the config, checked with the config."""
    runs = runs or runs_dir(config_path)
    preflight(load_config(config_path), runs)
    return runs


def training_data(config_path: Path, data: Path | None) -> Path:
    """The curated run `curate train` trains on: --data, or the latest run of this config."""
    config = load_config(config_path)
    if config.train is None:
        raise ConfigError(f"{config_path}: no `train:` section to train with")
    data = data or latest_run_dir(config_path, config.train.sets_needed())
    if isinstance(data, RemotePath):  # pulled into a staging folder by the flow: checked before that
        check_reachable(data, "--data", must_exist=True)
        if not (data / "stats.json").is_file():
            raise ConfigError(f"--data {data}: not a run directory (no stats.json)")
    return data
