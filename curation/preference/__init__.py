"""Preference pairs: candidate answers per prompt, the pair rules, and pairwise confirmation."""
