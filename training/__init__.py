"""Fine-tuning on curated data: LoRA / QLoRA SFT, DPO and ORPO as thin wrappers around TRL.

`sft.train_sft`, `dpo.train_dpo`, `dpo.train_orpo`; models in `models`, devices and the
memory estimate in `hardware`, what the stages share in `common`.
"""

import os

# Models load from local directories only. Set before any submodule imports huggingface_hub,
# which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
