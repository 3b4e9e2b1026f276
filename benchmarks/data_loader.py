"""Tokens per second served by the trainer's data loader (lingua_modified/lingua/data.py), seq_len 256 and batch 8,
on pre-tokenized synthetic data (Depo, Brevo, Mano records: long, medium and 11-token documents) and on text
(bytes tokenizer), in-process and from the background process. Give --train-tokens-per-second (what the training
step consumes, measured on the GPU) to print loader / training ratios; the target is >= 10.

    python benchmarks/data_loader.py [--seconds 2] [--train-tokens-per-second N]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lingua_modified"))

from data_synthetic_pretrain import write_dataset  # noqa: E402
from lingua.data import DataArgs, build_dataloader_from_args, init_dataloader_state_from_args  # noqa: E402
from lingua.tokenizer import TokenizerArgs  # noqa: E402

SYNTHETIC = {"depo": ("depo1-375", 200), "brevo": ("brevo1-110", 1000), "mano": ("mano-10", 20000)}


def write_text(folder: str, docs: int = 2000) -> None:
    """English-looking documents of 200..4000 characters (random words; the loader does not care what they say)."""
    rng = np.random.default_rng(0)
    words = "the of and to in is was for on that with as by at from his her an were are which this be".split()
    words += [f"word{i}" for i in range(500)]
    os.makedirs(folder)
    with open(os.path.join(folder, "text.chunk.00.jsonl"), "w") as f:
        for _ in range(docs):
            n = int(rng.integers(40, 800))
            f.write(json.dumps({"text": " ".join(rng.choice(words, n)) + "."}) + "\n")


def loader_rate(args: DataArgs, seconds: float) -> float:
    state = init_dataloader_state_from_args(args, 0, 1)
    with build_dataloader_from_args(args, state) as batches:
        next(batches)  # start-up (process start, filling the shuffle buffer) is not throughput
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            tokens, _, _ = next(batches)
            count += 1
        elapsed = time.perf_counter() - start
    return count * tokens.shape[0] * tokens.shape[1] / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per setting")
    parser.add_argument("--train-tokens-per-second", type=float, default=None)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        for generator, (preset, num) in SYNTHETIC.items():
            write_dataset(generator, preset, "train", num, 0, os.path.join(root, generator), progress=False)
        write_text(os.path.join(root, "text"))
        settings = {name: TokenizerArgs(name="tokens") for name in SYNTHETIC} | {"text": TokenizerArgs()}
        print(
            f"{'data':8}{'mode':8}{'tokens/s':>12}"
            + ("  loader/train (target >= 10)" * bool(options.train_tokens_per_second))
        )
        for source, tokenizer in settings.items():
            for load_async in (False, True):
                args = DataArgs(
                    root_dir=root, sources={source: 1.0}, batch_size=8, seq_len=256, prefetch_size=64,
                    load_async=load_async, tokenizer=tokenizer,
                )  # fmt: skip
                rate = loader_rate(args, options.seconds)
                line = f"{source:8}{'async' if load_async else 'sync':8}{rate:12,.0f}"
                if options.train_tokens_per_second:
                    ratio = rate / options.train_tokens_per_second
                    line += f"  {ratio:8.1f}  {'PASS' if ratio >= 10 else 'FAIL'}"
                print(line)


if __name__ == "__main__":
    main()
