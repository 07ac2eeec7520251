"""Budgeted selection: the best sft records within a budget in records or tokens, kept diverse."""

from curation.select.stage import build_select_stage

__all__ = ["build_select_stage"]
