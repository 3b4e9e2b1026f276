"""Answer accuracy of a synthetic task at every checkpoint of a run, written as metrics.eval.jsonl (contract 4).

A record {"tokens", "labels"} marks its answers with labels 1; each maximal run of 1s is one answer. An answer counts
as correct when the model's argmax reproduces every one of its tokens given the true prefix — exactly what greedy
decoding of that answer would produce.
"""

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import torch

from apps.main.eval import append_metrics
from apps.main.generate import load_consolidated_model_and_tokenizer
from apps.main.transformer import LMTransformer
from lingua.checkpoint import consolidate_checkpoint, list_checkpoints

logger = logging.getLogger()


def answer_spans(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of 1s."""
    spans, start = [], None
    for i, label in enumerate([*labels, 0]):
        if label and start is None:
            start = i
        elif not label and start is not None:
            spans.append((start, i))
            start = None
    return spans


@torch.no_grad()
def answer_accuracy(model: LMTransformer, records: list[dict], batch_size: int = 64) -> float:
    """The fraction of answers (over all records) whose every token is the model's argmax given the true prefix."""
    for number, record in enumerate(records):
        spans = answer_spans(record["labels"])
        if spans and spans[0][0] == 0:
            raise ValueError(f"record {number}: an answer starts at the first token, which nothing predicts")
    if not any(answer_spans(record["labels"]) for record in records):
        raise ValueError("no answers to score: no record has a label 1")
    correct = total = 0
    for begin in range(0, len(records), batch_size):
        batch = records[begin : begin + batch_size]
        width = max(len(r["tokens"]) for r in batch)
        tokens = torch.zeros(len(batch), width, dtype=torch.long)
        for row, record in enumerate(batch):
            tokens[row, : len(record["tokens"])] = torch.tensor(record["tokens"])
        predicted = model(tokens).argmax(-1)  # predicted[:, i] is the guess for token i + 1
        for row, record in enumerate(batch):
            for start, end in answer_spans(record["labels"]):
                total += 1
                correct += bool((predicted[row, start - 1 : end - 1] == tokens[row, start:end]).all())
    return correct / total


def evaluate_run(dump_dir: Path, test_file: Path, task: str) -> list[tuple[int, float]]:
    """Accuracy at every checkpoint of `dump_dir`; appends one line per checkpoint to dump_dir/metrics.eval.jsonl."""
    records = [json.loads(line) for line in test_file.read_text().splitlines()]
    results = []
    for folder in list_checkpoints(dump_dir / "checkpoints"):
        model, _ = load_consolidated_model_and_tokenizer(consolidate_checkpoint(folder))
        accuracy, step = answer_accuracy(model, records), int(folder.name)
        line = {"created_at": datetime.now(timezone.utc).isoformat(), "global_step": step, task: {"acc,none": accuracy}}
        append_metrics(str(dump_dir), "metrics.eval.jsonl", line)
        results.append((step, accuracy))
        logger.info(f"{dump_dir.name} step {step}: {task} accuracy {accuracy:.3f}")
    return results
