"""Trainer overhead on CPU: tokens/s of `python -m apps.main.train` (data loading, checkpoint bookkeeping, metrics,
signals) against a bare PyTorch loop over the same model, optimizer and batch shape; and the data loader's own
throughput against what training consumes. Prints ratios measured side by side in one run.

Usage: python benchmarks/trainer.py [--steps 60] [--rounds 3]
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

LINGUA = Path(__file__).resolve().parents[1] / "lingua_modified"
sys.path.insert(0, str(LINGUA))

from apps.main.train import TrainArgs  # noqa: E402
from apps.main.transformer import LMTransformer  # noqa: E402
from lingua.args import cli_overrides, dataclass_from_dict, load_yaml, merge_sources  # noqa: E402
from lingua.data import build_dataloader_from_args, init_dataloader_state_from_args  # noqa: E402
from lingua.optim import build_optimizer  # noqa: E402

CONFIG = LINGUA / "apps" / "main" / "configs" / "debug.yaml"
# the debug model at a size where a step costs what it would in a small real run (a few tens of ms on one core)
OVERRIDES = ["model.dim=256", "model.n_layers=4", "model.n_heads=8", "model.rope_dim=16", "data.seq_len=256",
             "data.batch_size=8", "data.load_async=false"]  # fmt: skip


def write_data(root: Path, documents: int = 20_000) -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    (root / "debug").mkdir(parents=True)
    with open(root / "debug" / "debug.chunk.00.jsonl", "w") as f:
        for _ in range(documents):
            f.write(json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(20, 200)))}) + "\n")


def trainer_tokens_per_second(root: Path, dump: Path, steps: int) -> float:
    command = [sys.executable, "-m", "apps.main.train", f"config={CONFIG}", f"dump_dir={dump}", f"steps={steps}",
               f"data.root_dir={root}", f"logging.freq={steps // 3}", "checkpoint.dump.every=1000000",
               "checkpoint.eval.every=1000000", *OVERRIDES]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(LINGUA))
    subprocess.run(command, cwd=LINGUA, env=env, check=True, capture_output=True)
    lines = [json.loads(line) for line in (dump / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(line["speed/wps"] for line in lines[1:])  # the first window includes warm-up


def config(root: Path):
    _, overrides = cli_overrides([*OVERRIDES, f"data.root_dir={root}"])
    args = dataclass_from_dict(TrainArgs, merge_sources(load_yaml(str(CONFIG)), overrides))
    args.model.vocab_size, args.model.max_seqlen = 258, args.data.seq_len
    return args


def bare_loop_tokens_per_second(root: Path, steps: int) -> float:
    args = config(root)
    torch.manual_seed(0)
    model = LMTransformer(args.model)
    model.init_weights()
    optimizer, scheduler = build_optimizer(model, args.optim, steps)
    shape = (args.data.batch_size, args.data.seq_len)
    batches = [torch.randint(0, 258, (2, *shape)) for _ in range(8)]
    timed = steps - steps // 3
    for step in range(steps):
        if step == steps - timed:
            start = time.perf_counter()
        inputs, targets = batches[step % len(batches)]
        loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.optim.clip, foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return timed * inputs.numel() / (time.perf_counter() - start)


def loader_tokens_per_second(root: Path, batches: int = 400) -> float:
    args = config(root)
    state = init_dataloader_state_from_args(args.data, 0, 1)
    with build_dataloader_from_args(args.data, state) as stream:
        next(stream)
        start = time.perf_counter()
        for _ in range(batches):
            tokens, _, _ = next(stream)
    return batches * tokens[..., 0].size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "data"
        write_data(root)
        trainer, bare = [], []
        for round_ in range(args.rounds):  # interleaved, so machine noise hits both alike
            trainer.append(trainer_tokens_per_second(root, Path(temp) / f"run{round_}", args.steps))
            bare.append(bare_loop_tokens_per_second(root, args.steps))
        loader = loader_tokens_per_second(root)
    trainer_tps, bare_tps = statistics.median(trainer), statistics.median(bare)
    print("model: debug.yaml with dim 256, 4 layers, seq 256, batch 8 (CPU, one thread)")
    print(f"trainer {trainer_tps:,.0f} tok/s   bare loop {bare_tps:,.0f} tok/s   ratio {trainer_tps / bare_tps:.3f} "
          "(target >= 0.95)")  # fmt: skip
    print(f"data loader {loader:,.0f} tok/s = {loader / trainer_tps:.1f}x what training consumes (target >= 10x)")


if __name__ == "__main__":
    main()
