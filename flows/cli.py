"""`curate` command line: the commands that run a flow. The arguments and the checks before any
work: curation/core/arguments.py; the line and exit code of each ending: curation/report/console.py.

Fatal problems (missing file, invalid config) print one message naming the field or path and
exit with code 2, without a traceback; a failed `fail`-severity validation suite exits 3, a
stage that could not do its job (judges unreachable, too many records unscored, a disk that
refuses a write) exits 4, a Prefect API that stops answering 5, SIGINT 130 and SIGTERM 143
(curation/core/ending.py, flows/lifecycle.py). Prefect is imported only by commands that run a flow.
"""

from __future__ import annotations

import argparse
import os
import sys

from curation.core import arguments, ending
from curation.core.storage import SECRET_ENV
from curation.llm.secrets import register_secret
from curation.report.console import closing, funnel, print_report, report, validate
from flows import lifecycle
from schemas.train_result import TrainSummary
from training.console import summary_text

FLOW_COMMANDS = {"run", "train", "all", "serve"}  # commands that talk to a Prefect API


def run(args: argparse.Namespace) -> int:
    out = arguments.run_dir(args.config, args.out)
    lifecycle.prepare_prefect()
    from flows.curate import curate_flow

    stats = curate_flow(str(args.config.resolve()), str(out.resolve()), progress=not args.no_progress, fresh=args.fresh)
    print(funnel(stats, out))
    print_report(out)
    return 0


def train(args: argparse.Namespace) -> int:
    data = arguments.training_data(args.config, args.data)
    lifecycle.prepare_prefect()
    from flows.train import train_flow

    with ending.interruptible():  # training has no step boundaries of ours: a signal stops it where it is
        summary = train_flow(str(args.config.resolve()), str(data.resolve()), resume=not args.no_resume)
    assert isinstance(summary, TrainSummary)  # a flow that ends Failed raises where it is called
    print(summary_text(summary, data))
    return 0


def run_all(args: argparse.Namespace) -> int:
    out = arguments.run_dir(args.config, args.out, train=True)
    lifecycle.prepare_prefect()
    from flows.train import curate_then_train

    with ending.interruptible():  # as in `train`; the curate half checks between its steps too
        done = curate_then_train(
            str(args.config.resolve()), str(out.resolve()), not args.no_progress, not args.no_resume, args.fresh
        )
    assert isinstance(done, tuple)  # as in `train`: a failed half raises here
    stats, summary = done
    print(funnel(stats, out))
    print(summary_text(summary, out))
    print_report(out)
    return 0


def serve(args: argparse.Namespace) -> int:
    runs = arguments.runs_folder(args.config, args.runs)
    lifecycle.prepare_prefect()
    from flows.serve import serve_curate

    with ending.interruptible():  # Ctrl-C / SIGTERM stop serving at once (Prefect shuts the runner down)
        serve_curate(args.config, cron=args.cron, interval=args.interval, runs=runs, name=args.name)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = arguments.parser().parse_args(argv)
    # Models come from installed packages or local paths only; never reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for name in SECRET_ENV:  # storage credentials: masked in every message and log line
        if os.environ.get(name):
            register_secret(os.environ[name])
    try:
        with ending.signals():
            if args.command in FLOW_COMMANDS:
                lifecycle.prefect_defaults()
            code = COMMANDS[args.command](args)
            ending.check()  # a signal swallowed where it landed still ends the command as interrupted
            return code
    except BaseException as exc:
        if (closed := closing(exc, args.command)) is not None:
            line, code = closed
            print(line, file=sys.stderr)
            return code
        if (problem := ending.api_unreachable(exc)) is not None:
            print(f"curate: error: the Prefect API ({lifecycle.api_url()}) stopped answering ({problem})"
                  f"{ending.published_note()}", file=sys.stderr)
            ending.exit_now(lifecycle.EXIT_API)
        raise


COMMANDS = {
    "run": run, "train": train, "all": run_all, "serve": serve,
    "validate": lambda args: validate(args.config), "report": lambda args: report(args.run_dir),
}


if __name__ == "__main__":
    sys.exit(main())
