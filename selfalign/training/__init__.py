"""Losses (pure tensor functions) and the LoRA trainer."""
