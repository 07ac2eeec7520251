"""Training without Prefect: `python -m training.sft CONFIG --data RUN_DIR`, then
`python -m training.dpo CONFIG --data RUN_DIR`.

CONFIG is the run config (the YAML `curate train` reads); its `train:` section is the training
config, and `--candidate NAME` picks one of its candidates. RUN_DIR is a curated run with the
exported sets (RUN_DIR/export/hf/). Each entry runs one stage of the section's method as the
train flow does, into the same folder (RUN_DIR/train/[<candidate>/]<stage>/: checkpoints,
`adapter/`, resumed unless --no-resume), evaluates it on the held-out split, and writes the
stage's result (schemas.train_result.StageResult) to `<stage>/stage.json`. `training.dpo` runs
the method's preference stage (DPO, or ORPO for method orpo); after SFT (method sft_dpo) it
continues the SFT stage's adapter. The candidate's comparison with its base model, the jury's
win-rate and the ranking of candidates are `curate train`'s.

Exit codes: 0 done, 2 a config, input or data problem (one message, before any step),
4 a stage that could not do its job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

from schemas.base import ConfigError, StageFailed
from schemas.config import read_config
from schemas.train import METHOD_STAGES, TrainingInputError
from schemas.train_result import StageResult
from training.candidates import candidate_dir
from training.stages import dpo_stage, orpo_stage, sft_stage

STAGE_RESULT = "stage.json"
Entry = Literal["sft", "dpo"]


def train_stage(
    entry: Entry, config_path: Path, run_dir: Path, candidate: str | None = None, resume: bool = True
) -> tuple[StageResult, Path]:
    """Run the entry's stage of the config's train section on RUN_DIR: its result, and where it is."""
    train = read_config(config_path).train
    if train is None:
        raise ConfigError(f"{config_path}: no `train:` section to train with")
    if not (run_dir / "export" / "hf").is_dir():
        raise ConfigError(f"--data {run_dir}: no export/hf/ there: pass a curated run with an `export:` section")
    configs = train.candidate_configs()
    name = candidate or "main"
    if name not in configs:
        raise ConfigError(f"--candidate: {config_path} has {', '.join(configs)}; not {name!r}")
    cfg, out = configs[name], candidate_dir(run_dir, train, name)
    stages = METHOD_STAGES[cfg.method]
    stage = "orpo" if entry == "dpo" and cfg.method == "orpo" else entry
    if stage not in stages:
        raise ConfigError(f"train.method: {cfg.method} runs {' + '.join(stages)}, no {entry} stage")
    if stage == "sft":
        result = sft_stage(cfg, run_dir, out, resume)
    elif stage == "orpo":
        result = orpo_stage(cfg, run_dir, out, resume)
    else:
        sft_adapter = out / "sft" / "adapter" if "sft" in stages else None
        if sft_adapter is not None and not sft_adapter.is_dir():
            raise TrainingInputError(
                f"{sft_adapter} not found: method {cfg.method} continues the SFT adapter: run training.sft first"
            )
        result = dpo_stage(cfg, run_dir, out, sft_adapter, resume)
    path = out / stage / STAGE_RESULT
    result.write(path)
    return result, path


def main(entry: Entry, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m training.{entry}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path, help="run config (YAML) with a train: section")
    parser.add_argument("--data", type=Path, required=True, help="curated run directory with export/hf/")
    parser.add_argument("--candidate", help="one of train.candidates by name (default: the section alone)")
    parser.add_argument("--no-resume", action="store_true", help="train from scratch, ignoring checkpoints")
    args = parser.parse_args(argv)
    try:
        result, path = train_stage(entry, args.config, args.data, args.candidate, resume=not args.no_resume)
    except ConfigError as exc:
        print(f"training: error: {exc}", file=sys.stderr)
        return 2
    except StageFailed as exc:
        print(f"training: stopped: {exc}", file=sys.stderr)
        return 4
    loss = "-" if result.train_loss is None else f"{result.train_loss:.4f}"
    print(f"{result.stage}: {result.steps} steps on {result.train_rows - result.dropped_rows} of {result.train_rows}"
          f" train rows, train loss {loss}, adapter {result.adapter_dir}")
    print(f"result: {path}")
    return 0
