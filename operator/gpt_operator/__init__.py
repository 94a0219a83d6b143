"""gpt_operator."""
