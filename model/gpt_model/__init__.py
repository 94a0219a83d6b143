"""gpt_model."""
