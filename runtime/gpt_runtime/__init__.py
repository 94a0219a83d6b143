"""gpt_runtime."""
