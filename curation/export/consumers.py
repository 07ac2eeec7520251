"""How LLaMA-Factory and Axolotl load the exported files: dataset_info.json and axolotl.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from curation.export.formats import FILES, LLAMAFACTORY_PREFERENCE
from schemas.chat import named_template
from schemas.export import ExportConfig
from schemas.figures import ExportFile

_ROLE_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
# LLaMA-Factory dataset_info.json entry name -> (file, entry); the entry names are ours.
_LLAMAFACTORY: dict[str, tuple[str, dict[str, Any]]] = {
    "curate_alpaca": (
        FILES["alpaca"],
        {
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        },
    ),
    "curate_sharegpt": (
        FILES["sharegpt"],
        {"formatting": "sharegpt", "columns": {"messages": "conversations"}},
    ),
    "curate_openai": (
        FILES["openai"],
        {
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {**_ROLE_TAGS, "observation_tag": "tool", "system_tag": "system"},
        },
    ),
    # ShareGPT ranking rows; TRL's preference.jsonl (answers as lists) is not LLaMA-Factory's shape.
    "curate_preference": (
        LLAMAFACTORY_PREFERENCE,
        {
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
    ),
}


def llamafactory_info(files: dict[str, ExportFile]) -> dict[str, Any]:
    """dataset_info.json: one entry per written file LLaMA-Factory reads."""
    info = {}
    for name, (file, spec) in _LLAMAFACTORY.items():
        written = files.get(file)
        if written is None or not written.rows:
            continue
        entry = {"file_name": file, **spec}
        if written.system_column:  # mapped only when present: LLaMA-Factory needs the column
            entry["columns"] = {**spec["columns"], "system": "system"}
        info[name] = entry
    return info


_SHAREGPT_ROLES = {
    "system": ["system"],
    "user": ["human"],
    "assistant": ["gpt", "function_call"],
    "tool": ["observation"],
}
_SHAREGPT_PROPERTIES = {"role": "from", "content": "value"}
# Axolotl fragment name -> (file, dataset spec).
_AXOLOTL: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": (
        FILES["openai"],
        {"type": "chat_template", "field_messages": "messages", "roles_to_train": ["assistant"]},
    ),
    "sharegpt": (
        FILES["sharegpt"],
        {
            "type": "chat_template",
            "field_messages": "conversations",
            "message_property_mappings": _SHAREGPT_PROPERTIES,
            "roles": _SHAREGPT_ROLES,
            "roles_to_train": ["assistant"],
        },
    ),
    "alpaca": (FILES["alpaca"], {"type": "alpaca"}),
    # Axolotl's chat_template.default DPO type wants single-message answers: LLaMA-Factory's file.
    "preference": (
        LLAMAFACTORY_PREFERENCE,
        {
            "type": "chat_template.default",
            "field_messages": "conversations",
            "field_chosen": "chosen",
            "field_rejected": "rejected",
            "message_property_mappings": _SHAREGPT_PROPERTIES,
            "roles": _SHAREGPT_ROLES,
        },
    ),
}


def axolotl_yaml(out_dir: Path, files: dict[str, ExportFile], cfg: ExportConfig) -> str:
    """One Axolotl config fragment per written set; paste the one you train on."""
    if cfg.chat_template is None:
        template: dict[str, Any] = {"chat_template": "tokenizer_default"}
    else:  # the exact template this export measured, so Axolotl renders the same text
        template = {"chat_template": "jinja", "chat_template_jinja": named_template(cfg.chat_template)}
    fragments = {}
    for name, (file, spec) in _AXOLOTL.items():
        if file not in files or not files[file].rows:
            continue
        fragment: dict[str, Any] = {"rl": "dpo"} if name == "preference" else {}
        if spec["type"] != "alpaca":  # Alpaca renders with Axolotl's own prompt, not a template
            fragment |= template
        fragment["datasets"] = [{"path": str(out_dir.resolve() / file), "ds_type": "json", **spec}]
        fragments[name] = fragment
    header = (
        "# Axolotl config fragments for this export, one per set: paste the one you train on.\n"
        "# openai and sharegpt hold the same conversations; alpaca the single-turn ones, rendered\n"
        "# with Axolotl's Alpaca prompt instead of the chat template.\n"
    )
    return header + yaml.dump(fragments, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=100)


class _PlainDumper(yaml.SafeDumper):
    """Writes shared mappings out in full: no &id001 anchors for a human to follow."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
