"""The main job: a CPU miniature of Part 4.1. Generates Depo1-mini (multi-hop traversal), trains Llama and LlamaCanon
of equal size with the lingua trainer (torchrun, two processes), measures answer accuracy at every checkpoint, exports
LlamaCanon to Hugging Face and generates from it, and writes an interactive chart and a summary table.

    cd lingua_modified && python -m apps.demo --out ../runs/demo
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from apps.demo.accuracy import answer_spans, evaluate_run
from data_synthetic_pretrain import write_dataset
from data_synthetic_pretrain.depo import PRESETS as DEPO_PRESETS
from data_synthetic_pretrain.depo import eval_hops
from huggingface.convert_lingua_to_hf import convert_lingua_to_hf
from lingua.checkpoint import list_checkpoints
from lingua.logger import init_logger

logger = logging.getLogger()
HERE = Path(__file__).resolve().parent
TASK, PRESET = "depo", "depo1-mini"
MODELS = {"Llama": "", "LlamaCanon": "ABCD"}


def generate_data(out: Path, seed: int, train_samples: int, test_samples: int) -> tuple[Path, list[int]]:
    """Train and test files, with token ids renumbered densely: (test file, the original id of each dense id).

    The generators use a sparse id space up to 9999 (control tokens at 9000+); a tiny model would spend most of its
    compute on a 10000-way output layer, so the demo maps the ids it sees onto 0..V-1 (order preserved).
    """
    train = write_dataset(TASK, PRESET, "train", train_samples, seed, str(out / "data" / TASK), progress=False)
    test = write_dataset(TASK, PRESET, "test", test_samples, seed, str(out / "test"), progress=False)
    files = [Path(p) for p in train + test]
    records = {path: [json.loads(line) for line in path.read_text().splitlines()] for path in files}
    ids = sorted({t for lines in records.values() for record in lines for t in record["tokens"]})
    dense = {token: i for i, token in enumerate(ids)}
    for path, lines in records.items():
        with open(path, "w") as f:
            for record in lines:
                record["tokens"] = [dense[t] for t in record["tokens"]]
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
    return Path(test[0]), ids


def train(out: Path, name: str, canon_set: str, seed: int, steps: int, vocab_size: int) -> Path:
    dump_dir = out / name
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "apps.main.train", f"config={HERE / 'demo.yaml'}", f"name={name}", f"dump_dir={dump_dir}",
        f"data.root_dir={out / 'data'}", f"model.canon_set={canon_set!r}" if canon_set else "model.canon_set=''",
        f"seed={seed}", f"model.seed={seed}", f"data.seed={seed}", f"steps={steps}",
        f"data.tokenizer.vocab_size={vocab_size}",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), *sys.path]))
    start = time.time()
    with open(out / f"{name}.log", "w") as log:
        result = subprocess.run(command, cwd=HERE.parents[1], env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"training {name} failed (exit {result.returncode}); see {out / f'{name}.log'}")
    logger.info(f"trained {name} in {time.time() - start:.0f} s")
    return dump_dir


@torch.no_grad()
def generate_from_hf(hf_dir: Path, test_file: Path, ids: list[int], examples: int = 3) -> list[dict]:
    """Greedy answers of the exported LlamaCanon to the first query of a few test samples: the expected and the
    generated answer in the generator's ids, and the prompt and the generated answer in the trained (dense) ids."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True).eval()
    shown = []
    for line in test_file.read_text().splitlines()[:examples]:
        record = json.loads(line)
        start, end = answer_spans(record["labels"])[0]
        prompt = torch.tensor([record["tokens"][:start]])
        output = model.generate(prompt, max_new_tokens=end - start, do_sample=False)
        expected, generated = record["tokens"][start:end], output[0, start:].tolist()
        shown.append(
            dict(
                expected=[ids[t] for t in expected],
                generated=[ids[t] for t in generated],
                prompt_dense=prompt[0].tolist(),
                generated_dense=generated,
            )
        )
    return shown


def write_summary(out: Path, curves: dict, seed: int, examples: list[dict]) -> Path:
    steps = [step for step, _ in next(iter(curves.values()))]
    params = DEPO_PRESETS[PRESET]
    lines = [
        f"# Demo: Llama vs LlamaCanon on {PRESET} (seed {seed})",
        "",
        f"Answer accuracy (an answer is right when every one of its tokens is; test split: cycles of {params.N} words, "
        f"queries of {', '.join(map(str, eval_hops(params.K)))} hops):",
        "",
        "| step | " + " | ".join(curves) + " |",
        "|---" * (len(curves) + 1) + "|",
    ]
    for i, step in enumerate(steps):
        lines.append(f"| {step} | " + " | ".join(f"{curve[i][1]:.3f}" for curve in curves.values()) + " |")
    lines += ["", "LlamaCanon exported to Hugging Face, greedy answers to test queries (9500 marks the answer):", ""]
    lines += [f"- expected {e['expected']}, generated {e['generated']}" for e in examples]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="../runs/demo", help="output folder (must not exist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--train-samples", type=int, default=40_000)
    parser.add_argument("--test-samples", type=int, default=200)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    if out.exists():
        parser.exit(2, f"error: --out {out} already exists; choose another folder or remove it\n")
    out.mkdir(parents=True)
    init_logger()
    test_file, ids = generate_data(out, args.seed, args.train_samples, args.test_samples)
    curves = {}
    for name, canon_set in MODELS.items():
        dump_dir = train(out, name, canon_set, args.seed, args.steps, len(ids))
        curves[name] = evaluate_run(dump_dir, test_file, TASK)
    final = list_checkpoints(out / "LlamaCanon" / "checkpoints")[-1] / "consolidated"
    hf_dir = out / "LlamaCanon-hf"
    convert_lingua_to_hf(str(final), str(hf_dir))
    examples = generate_from_hf(hf_dir, test_file, ids)
    (out / "hf_generations.json").write_text(json.dumps(examples, indent=1))
    chart = out / "chart.html"
    runs = [str(out / name) for name in MODELS]
    plot = [sys.executable, "-m", "apps.plots.training_curves", "--runs", *runs, "--out", str(chart)]
    subprocess.run(plot, cwd=HERE.parents[1], check=True)
    summary = write_summary(out, curves, args.seed, examples)
    print(summary.read_text())
    print(f"chart: {chart}\nsummary: {summary}\nHugging Face export: {hf_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
