"""The LLM jury: rubric judges that rate answers 1..scale_max with any ChatModel."""
