"""Trainer overhead on CPU: tokens/s of `python -m apps.main.train` (data loading in-process, checkpoint
bookkeeping, metrics, signals) against a bare PyTorch loop over the same model, optimizer and batch shape; and the data
loader's own throughput against what training consumes. Prints ratios measured side by side in one run.

Both loops run as subprocesses and are timed by the CPU time they use (this machine is shared, so wall-clock rates
swing by 2-3x); start-up and the final checkpoint cancel out by taking the difference of a long and a short run.

Usage: python benchmarks/trainer.py [--steps 60] [--rounds 3]
"""

import argparse
import json
import os
import random
import resource
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


def write_data(root: Path, documents: int = 20_000, max_words: int = 200) -> None:
    """root/debug/debug.chunk.00.jsonl: `documents` texts of 20..max_words words drawn from 500 (seeded)."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    (root / "debug").mkdir(parents=True)
    with open(root / "debug" / "debug.chunk.00.jsonl", "w") as f:
        for _ in range(documents):
            f.write(json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(20, max_words)))}) + "\n")


def cpu_seconds(command: list[str]) -> float:
    """CPU time (user + system) of a child process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(LINGUA))
    subprocess.run(command, cwd=LINGUA, env=env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def trainer_command(root: Path, dump: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "apps.main.train", f"config={CONFIG}", f"dump_dir={dump}", f"steps={steps}",
            f"data.root_dir={root}", "logging.freq=10", "checkpoint.dump.every=1000000",
            "checkpoint.eval.every=1000000", *OVERRIDES]  # fmt: skip


def bare_command(root: Path, steps: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--bare-loop", str(steps), "--root", str(root)]


def per_step_cpu(run, short: int, long: int) -> float:
    return (run(long) - run(short)) / (long - short)


def config(root: Path):
    _, overrides = cli_overrides([*OVERRIDES, f"data.root_dir={root}"])
    args = dataclass_from_dict(TrainArgs, merge_sources(load_yaml(str(CONFIG)), overrides))
    args.model.vocab_size, args.model.max_seqlen = 258, args.data.seq_len
    return args


def bare_loop(root: Path, steps: int) -> None:
    args = config(root)
    torch.manual_seed(0)
    model = LMTransformer(args.model)
    model.init_weights()
    optimizer, scheduler = build_optimizer(model, args.optim, steps)
    shape = (args.data.batch_size, args.data.seq_len)
    batches = [torch.randint(0, 258, (2, *shape)) for _ in range(8)]
    for step in range(steps):
        inputs, targets = batches[step % len(batches)]
        loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.optim.clip, foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


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
    parser.add_argument("--steps", type=int, default=60, help="extra steps of the long run over the short one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare-loop", type=int, help=argparse.SUPPRESS)  # internal: run the bare loop
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.bare_loop is not None:
        bare_loop(Path(args.root), args.bare_loop)
        return
    short, long = 10, 10 + args.steps
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "data"
        write_data(root)
        runs = iter(range(10**6))
        trainer, bare = [], []
        for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
            trainer.append(
                per_step_cpu(
                    lambda n: cpu_seconds(trainer_command(root, Path(temp) / f"run{next(runs)}", n)), short, long
                )
            )
            bare.append(per_step_cpu(lambda n: cpu_seconds(bare_command(root, n)), short, long))
        loader = loader_tokens_per_second(root)
    tokens = 8 * 256
    trainer_tps, bare_tps = tokens / statistics.median(trainer), tokens / statistics.median(bare)
    print("model: debug.yaml with dim 256, 4 layers, seq 256, batch 8 (CPU, one thread); tokens per CPU-second")
    print(f"trainer {trainer_tps:,.0f} tok/s   bare loop {bare_tps:,.0f} tok/s   ratio {trainer_tps / bare_tps:.3f} "
          "(target >= 0.95)")  # fmt: skip
    print(f"data loader {loader:,.0f} tok/s = {loader / trainer_tps:.1f}x what training consumes (target >= 10x)")


if __name__ == "__main__":
    main()
