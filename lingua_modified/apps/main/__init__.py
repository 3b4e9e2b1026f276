"""Llama / LlamaCanon training, evaluation and generation."""
