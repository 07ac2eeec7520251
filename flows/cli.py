"""`curate` command line: run or validate a config.

Fatal problems (missing file, invalid config) print one message naming the field or path and
exit with code 2, without a traceback. Prefect is imported only by commands that run a flow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from schemas.config import ConfigError, load_config

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="curate: ingest -> filters -> dedup -> run directory")
    run.add_argument("config", type=Path)
    run.add_argument("--out", type=Path, help="run directory (default: runs/<config>-<time>)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    validate = commands.add_parser("validate", help="check a config and its inputs, run nothing")
    validate.add_argument("config", type=Path)
    return parser


def _offline_defaults() -> None:
    # Models come from installed packages or local paths only; never reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Prefect's embedded server needs 15-25 s to start on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Offline by design; its start-up write also races the embedded server's SQLite database.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def validate(config_path: Path) -> int:
    from curation.ingest import check_inputs

    config = load_config(config_path)
    check_inputs(config.inputs)
    sections = [name for name in ("filters", "dedup") if getattr(config, name)]
    print(f"{config_path}: valid ({len(config.inputs)} inputs; sections: {', '.join(sections) or 'none'})")
    return 0


def run(config_path: Path, out: Path | None, progress: bool) -> int:
    from curation.ingest import check_inputs

    config = load_config(config_path)
    check_inputs(config.inputs)  # every fatal input problem surfaces before any work
    out = out or Path("runs") / f"{config_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    from flows.curate import curate_flow

    stats = curate_flow(str(config_path.resolve()), str(out.resolve()), progress=progress)
    print(_funnel(stats, out))
    return 0


def _funnel(stats: dict, out: Path) -> str:
    lines = [f"{'stage':<16}{'in':>9}{'out':>9}{'removed':>9}  top reasons"]
    for s in stats["stages"]:
        reasons = ", ".join(f"{r} {n}" for r, n in list(s["removed_by_reason"].items())[:3])
        lines.append(f"{s['stage']:<16}{s['in']:>9}{s['out']:>9}{s['removed']:>9}  {reasons}")
    t = stats["totals"]
    lines.append(f"kept {t['kept']} of {t['ingested']} records in {stats['seconds']:.1f} s -> {out}/")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _offline_defaults()
    try:
        if args.command == "validate":
            return validate(args.config)
        return run(args.config, args.out, progress=not args.no_progress)
    except ConfigError as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
