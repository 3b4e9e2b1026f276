"""The main job (`make demo`): a CPU miniature of Part 4.1 — Llama vs LlamaCanon on a synthetic reasoning task."""
