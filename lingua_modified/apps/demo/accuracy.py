"""Answer accuracy of a synthetic task at every checkpoint of a run, written as metrics.eval.jsonl (contract 4), and
the same count for the Hugging Face export by greedy generation.

A record {"tokens", "labels"} marks its answers with labels 1; each maximal run of 1s is one answer. An answer counts
as correct when the model's argmax reproduces every one of its tokens given the true prefix — exactly what greedy
decoding of that answer would produce, so the two counts of one checkpoint must be equal.
"""

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

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


def read_records(test_file: Path) -> list[dict]:
    return [json.loads(line) for line in test_file.read_text().splitlines()]


def evaluate_run(dump_dir: Path, test_file: Path, task: str, label: str | None = None) -> list[tuple[int, float]]:
    """Accuracy at every checkpoint of `dump_dir`, with a progress bar over the checkpoints; appends one line per
    checkpoint to dump_dir/metrics.eval.jsonl."""
    records = read_records(test_file)
    results = []
    bar = tqdm(list_checkpoints(dump_dir / "checkpoints"), desc=f"eval {label or dump_dir.name}", unit="ckpt")
    for folder in bar:
        model, _ = load_consolidated_model_and_tokenizer(consolidate_checkpoint(folder))
        accuracy, step = answer_accuracy(model, records), int(folder.name)
        line = {"created_at": datetime.now(timezone.utc).isoformat(), "global_step": step, task: {"acc,none": accuracy}}
        append_metrics(str(dump_dir), "metrics.eval.jsonl", line)
        results.append((step, accuracy))
        bar.set_postfix(step=step, acc=f"{accuracy:.3f}")
    logger.info(f"{label or dump_dir.name}: accuracy at steps {[step for step, _ in results]} in {dump_dir}")
    return results


def queries(records: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(true prefix, answer) of every answer of every record, in file order."""
    return [
        (record["tokens"][:start], record["tokens"][start:end])
        for record in records
        for start, end in answer_spans(record["labels"])
    ]


@torch.no_grad()
def greedy_answers(model, prompts: list[tuple[list[int], list[int]]], batch_size: int = 64) -> list[list[int]]:
    """A Hugging Face causal LM's greedy continuation of each prefix, as long as its answer. Prefixes are batched with
    left padding (masked out by attention_mask), so every row's continuation starts at the same column."""
    answers = []
    for begin in tqdm(range(0, len(prompts), batch_size), desc="HF generate", unit="batch"):
        batch = prompts[begin : begin + batch_size]
        width = max(len(prefix) for prefix, _ in batch)
        tokens = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, (prefix, _) in enumerate(batch):
            tokens[row, width - len(prefix) :] = torch.tensor(prefix)
            mask[row, width - len(prefix) :] = 1
        length = max(len(answer) for _, answer in batch)
        # no end-of-sequence stop: the exported config names an EOS id, which in the synthetic vocabulary is an
        # ordinary token that may sit inside an answer
        output = model.generate(
            tokens, attention_mask=mask, max_new_tokens=length, do_sample=False, pad_token_id=0, eos_token_id=None
        )
        answers += [output[row, width : width + len(answer)].tolist() for row, (_, answer) in enumerate(batch)]
    return answers
