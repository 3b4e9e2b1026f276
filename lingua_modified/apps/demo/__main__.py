"""The main job: a CPU miniature of Part 4.1. Generates a Depo task (multi-hop traversal), trains Llama and LlamaCanon
of equal size and budget side by side with the lingua trainer, measures answer accuracy at every checkpoint, exports
LlamaCanon to Hugging Face and checks its greedy answers against the lingua accuracy, and writes an interactive chart
and a summary.

    cd lingua_modified && python -m apps.demo --out ../runs/demo [--seeds 3]

What to change to try another setting: PRESET below (the task; its N, K and word shape live in
data_synthetic_pretrain/depo.py), demo.yaml (model size, lr, batch, steps, checkpoint interval), and the sample counts
below or on the command line.

Layout of --out with one seed: data/ and test/ (the generated task), Llama/ and LlamaCanon/ (dump dirs),
Llama.log and LlamaCanon.log (the trainers' output), LlamaCanon-hf/, hf_generations.json, chart.html, summary.md.
With --seeds N, each seed's data, runs and logs sit in seed<s>/ instead; the export, chart and summary stay on top.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from apps.demo.accuracy import evaluate_run, greedy_answers, queries, read_records
from apps.demo.launch import DemoError, TrainingRun, train_together
from apps.demo.summary import HfCheck, check_agreement, read_accuracy, write_summary
from apps.plots import training_curves
from data_synthetic_pretrain import write_dataset
from data_synthetic_pretrain.depo import PRESETS as DEPO_PRESETS
from data_synthetic_pretrain.depo import eval_hops
from huggingface.convert_lingua_to_hf import convert_lingua_to_hf
from lingua.args import load_yaml, write_atomic
from lingua.checkpoint import list_checkpoints
from lingua.logger import init_logger

logger = logging.getLogger()
HERE = Path(__file__).resolve().parent
CONFIG = HERE / "demo.yaml"
TASK, PRESET = "depo", "depo-demo"
TRAIN_SAMPLES, TEST_SAMPLES = 40_000, 200
# model.canon_set and optim.lr of each model; everything else is equal. Each learning rate is the one that gave that
# model its best held-out accuracy at 600 steps, seed 0, out of 1e-3, 3e-3, 6e-3, 1e-2 and 3e-2 (the README's table).
MODELS = {"Llama": ("", 3e-3), "LlamaCanon": ("ABCD", 1e-2)}
EXAMPLES = 3  # greedy answers shown in the summary
LOSS_WINDOW = 3  # the chart's moving average over logged losses: light, so that a short run still has a curve


def generate_data(folder: Path, seed: int, train_samples: int, test_samples: int) -> tuple[Path, list[int]]:
    """Train and test files, with token ids renumbered densely: (test file, the original id of each dense id).

    The generators use a sparse id space up to 9999 (control tokens at 9000+); a tiny model would spend most of its
    compute on a 10000-way output layer, so the demo maps the ids it sees onto 0..V-1 (order preserved).
    """
    train = write_dataset(TASK, PRESET, "train", train_samples, seed, str(folder / "data" / TASK))
    test = write_dataset(TASK, PRESET, "test", test_samples, seed, str(folder / "test"), progress=False)
    files = [Path(p) for p in train + test]
    records = {path: read_records(path) for path in files}
    ids = sorted({t for lines in records.values() for record in lines for t in record["tokens"]})
    dense = {token: i for i, token in enumerate(ids)}
    for path, lines in records.items():
        with open(path, "w") as f:
            for record in lines:
                record["tokens"] = [dense[t] for t in record["tokens"]]
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
    return Path(test[0]), ids


def training_run(folder: Path, model: str, seed: int, seeds: int, steps: int, vocab_size: int) -> TrainingRun:
    """One run: the seed sets model init and data order (the data itself comes from the seed's own folder)."""
    name = model if seeds == 1 else f"{model}-seed{seed}"
    canon_set, lr = MODELS[model]
    overrides = [
        f"name={name}", f"data.root_dir={folder / 'data'}", "model.canon_set=" + (canon_set or "''"), f"optim.lr={lr}",
        f"seed={seed}", f"model.seed={seed}", f"data.seed={seed}", f"steps={steps}",
        f"data.tokenizer.vocab_size={vocab_size}",
    ]  # fmt: skip
    label = model if seeds == 1 else f"{model} seed {seed}"
    return TrainingRun(label, folder / model, folder / f"{model}.log", overrides, steps)


def hf_check(hf_dir: Path, seed: int, dump_dir: Path, test_file: Path, ids: list[int]) -> HfCheck:
    """Greedy answers of the export to every query of the test file, and the checkpoint's logged accuracy."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, trust_remote_code=True).eval()
    records = read_records(test_file)
    prompts = queries(records)
    answers = greedy_answers(model, prompts)
    correct = sum(answer == expected for answer, (_, expected) in zip(answers, prompts, strict=True))
    firsts, count = [], 0  # the first query of each of the first few samples
    for record in records[:EXAMPLES]:
        firsts.append(count)
        count += len(queries([record]))
    examples = [
        dict(
            expected=[ids[t] for t in prompts[i][1]],
            generated=[ids[t] for t in answers[i]],
            prompt_tail=[ids[t] for t in prompts[i][0][-6:]],
            prompt_dense=prompts[i][0],
            generated_dense=answers[i],
        )
        for i in firsts
    ]
    logged = read_accuracy(dump_dir, TASK)
    step = max(logged)
    return HfCheck(hf_dir, seed, test_file, len(records), step, correct, len(prompts), logged[step], examples)


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Path) -> None:
    for option in ("seeds", "steps", "train_samples", "test_samples"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} {value}; expected a positive integer")
    if args.seed < 0:
        parser.error(f"--seed {args.seed}; expected a non-negative integer")
    if out.exists():
        parser.exit(2, f"error: --out {out} already exists; choose another folder or remove it\n")


def parse_args(argv) -> tuple[argparse.Namespace, Path]:
    parser = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="../runs/demo", help="output folder (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds (seed, seed+1, ...): each its own data")
    parser.add_argument("--steps", type=int, help="training steps (default: demo.yaml's)")
    parser.add_argument("--train-samples", type=int, default=TRAIN_SAMPLES)
    parser.add_argument("--test-samples", type=int, default=TEST_SAMPLES)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    check_options(parser, args, out)
    args.steps = args.steps or load_yaml(str(CONFIG))["steps"]
    return args, out


def run(args: argparse.Namespace, out: Path) -> None:
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs = {model: {} for model in MODELS}
    tests = {}
    for seed in seeds:
        folder = out if len(seeds) == 1 else out / f"seed{seed}"
        logger.info(f"seed {seed}: generating {PRESET} ({args.train_samples} train, {args.test_samples} test samples)")
        tests[seed] = generate_data(folder, seed, args.train_samples, args.test_samples)
        pair = [training_run(folder, model, seed, len(seeds), args.steps, len(tests[seed][1])) for model in MODELS]
        start = time.time()
        train_together(pair, CONFIG)
        logs = ", ".join(str(training.log) for training in pair)
        logger.info(f"seed {seed}: trained in {time.time() - start:.0f} s; the trainers' output is in {logs}")
        for model, training in zip(MODELS, pair, strict=True):
            evaluate_run(training.dump_dir, tests[seed][0], TASK, training.label)
            runs[model][seed] = training.dump_dir

    canon_dir = runs["LlamaCanon"][seeds[0]]
    hf_dir = out / "LlamaCanon-hf"
    convert_lingua_to_hf(str(list_checkpoints(canon_dir / "checkpoints")[-1] / "consolidated"), str(hf_dir))
    check = hf_check(hf_dir, seeds[0], canon_dir, *tests[seeds[0]])
    write_atomic(str(out / "hf_generations.json"), json.dumps(check.examples, indent=1))
    try:
        check_agreement(check)
    except ValueError as error:
        raise DemoError(str(error)) from None

    chart = out / "chart.html"
    title = f"Demo: Llama vs LlamaCanon on {PRESET}"
    dump_dirs = [str(d) for model in MODELS for d in runs[model].values()]
    options = ["--loss-window", str(LOSS_WINDOW), "--loss-stride", "1", "--title", title]
    if training_curves.main(["--runs", *dump_dirs, "--out", str(chart), *options]):
        raise DemoError(f"the chart {chart} could not be drawn (the error is above)")
    params = DEPO_PRESETS[PRESET]
    context = [
        f"Task {TASK} ({PRESET}): a cycle of {params.N} words listed as shuffled edges; each query asks for the word "
        f"k hops on (training k = 1..{params.K}, test k in {eval_hops(params.K)}). An answer is right when every one "
        "of its tokens is."
    ]
    summary = out / "summary.md"
    write_summary(summary, title + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else ""), TASK, runs, context, check)
    print(summary.read_text())
    print(f"chart: {chart}\nsummary: {summary}\nHugging Face export: {hf_dir}")


def main(argv=None) -> int:
    args, out = parse_args(argv)
    out.mkdir(parents=True)
    init_logger()
    # the evaluations' matrices are tiny: a second thread buys little and, on a machine whose other core is busy,
    # made the Hugging Face generation ten times slower
    torch.set_num_threads(1)
    try:
        with logging_redirect_tqdm():
            run(args, out)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
