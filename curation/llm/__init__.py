"""Chat models the LLM stages call: OpenAI-compatible endpoints and local transformers models."""
