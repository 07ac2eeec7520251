"""Fine-tuning on curated data: LoRA / QLoRA SFT, DPO and ORPO as thin wrappers around TRL.

`sft.train_sft`, `dpo.train_dpo`, `dpo.train_orpo`; models in `base_model`, devices and the
memory estimate in `hardware`, what the stages share in `common`. A run on a curated run's
exported sets: `stages` (a stage with its evaluation), `candidates` (a candidate's steps,
result.json, resume, the ranking), `cli` (`python -m training.sft` / `training.dpo`, no Prefect).
"""

import os

# Models load from local directories only. Set before any submodule imports huggingface_hub,
# which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
