"""Synthetic dump dirs in the trainer's formats: config.yaml written by the trainer's own config dump, metrics.jsonl by
its MetricLogger, and metrics.eval.jsonl lines shaped like the evaluator's (lm-eval task dicts)."""

import json
import random
from datetime import datetime
from pathlib import Path

import pytest

from apps.main.train import TrainArgs
from lingua.args import dump_config
from lingua.metrics import MetricLogger

# batch_size x seq_len x grad_acc_steps x dp_replicate x dp_shard
BATCH, SEQ_LEN, GRAD_ACC, DP_REPLICATE = 3, 16, 2, 2
TOKENS_PER_STEP = BATCH * SEQ_LEN * GRAD_ACC * DP_REPLICATE
TINY_MODEL = dict(dim=32, n_layers=2, n_heads=2, vocab_size=64)


def task_results(rng: random.Random) -> dict:
    """One checkpoint's per-task dicts as lm-eval reports them (mmlu: the group with two of its subtasks)."""

    def scores(*metrics, filter_name="none"):
        result = {}
        for metric in metrics:
            result[f"{metric},{filter_name}"] = round(rng.uniform(0.2, 0.8), 6)
            result[f"{metric}_stderr,{filter_name}"] = 0.01
        return result

    return {
        "arc_challenge": {"alias": "arc_challenge", **scores("acc", "acc_norm")},
        "boolq": {"alias": "boolq", **scores("acc")},
        "hellaswag": {"alias": "hellaswag", **scores("acc", "acc_norm")},
        "mmlu": {"alias": "mmlu", **scores("acc"), "sample_count": {"acc,none": 100}},
        "mmlu_humanities": {"alias": "humanities", **scores("acc")},
        "mmlu_anatomy": {"alias": "anatomy", **scores("acc")},
        "triviaqa": {"alias": "triviaqa", **scores("exact_match", filter_name="remove_whitespace")},
    }


def write_run(folder: Path, name: str, canon_set: str, lr: float, steps: int = 40, eval_every: int = 10,
              log_every: int = 2, seed: int = 0) -> Path:  # fmt: skip
    """A finished run's dump dir: evaluations every `eval_every` steps (none at step 0), losses every `log_every`;
    its tokens per step are TOKENS_PER_STEP and its model is TINY_MODEL."""
    folder.mkdir(parents=True)
    args = TrainArgs(name=name, dump_dir=str(folder), steps=steps, grad_acc_steps=GRAD_ACC)
    args.data.batch_size, args.data.seq_len = BATCH, SEQ_LEN
    args.distributed.dp_replicate = DP_REPLICATE
    args.optim.lr = lr
    for key, value in dict(TINY_MODEL, canon_set=canon_set, max_seqlen=SEQ_LEN).items():
        setattr(args.model, key, value)
    dump_config(args, str(folder / "config.yaml"))
    rng = random.Random(seed)
    with open(folder / "metrics.eval.jsonl", "w") as f:
        for step in range(eval_every, steps + 1, eval_every):
            line = {"created_at": datetime(2026, 1, 1).isoformat(), "global_step": step, **task_results(rng)}
            f.write(json.dumps(line) + "\n")
    with MetricLogger(folder / "metrics.jsonl") as logger:
        for step in range(log_every, steps + 1, log_every):
            logger.log(
                {
                    "global_step": step,
                    "acc_step": 0,
                    "optim/lr": lr,
                    "optim/total_tokens": step * TOKENS_PER_STEP,
                    "loss/out": 4.0 / (1 + step) + rng.uniform(0, 0.1),
                }
            )
    return folder


class DumpDirs:
    """What the tests need from here (conftest is not importable as a module under --import-mode=importlib)."""

    write = staticmethod(write_run)
    tokens_per_step = TOKENS_PER_STEP
    model = TINY_MODEL


@pytest.fixture
def dump_dirs() -> DumpDirs:
    return DumpDirs()


@pytest.fixture
def four_runs(tmp_path) -> list[Path]:
    """Two configurations (lr 0.002, 0.003), each as a Canon run and a baseline."""
    return [
        write_run(tmp_path / folder, name, canon_set, lr, seed=seed)
        for seed, (folder, name, canon_set, lr) in enumerate(
            [
                ("llama-a", "Llama-lr0.002", "", 0.002),
                ("canon-a", "LlamaCanon-lr0.002", "ABCD", 0.002),
                ("llama-b", "Llama-lr0.003", "", 0.003),
                ("canon-b", "LlamaCanon-lr0.003", "ABCD", 0.003),
            ]
        )
    ]
