"""Interactive charts built from training dump dirs (their config.yaml, metrics.jsonl and metrics.eval.jsonl only)."""
