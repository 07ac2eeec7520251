"""The tuned model judged against its base on held-out prompts: jury win-rate, error analysis."""
