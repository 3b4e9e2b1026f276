"""Write the 16 Llama / LlamaCanon training recipes and the README table from the table below.

    python canon_llama_recipes/make_recipes.py           # write <name>.yaml for every run and the README table
    python canon_llama_recipes/make_recipes.py --check   # exit 1 if a checked-in file differs from what it writes

Each recipe is the published run (model, data, schedule and evaluation as released) in the trainer's YAML form; it loads
strictly into `apps.main.train.TrainArgs`. The parameter counts in the README come from building every model on the
meta device, so they are the trainer's own numbers.

The helpers at the bottom (markdown tables, the generated block of a README, write-or-check) are also used by
canon_llama_results/make_tables.py.
"""

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from atomic import write_atomic  # huggingface/atomic.py, linked beside this script

HERE = Path(__file__).resolve().parent
LINGUA_ROOT = HERE.parent / "lingua_modified"

SEQ_LEN = 4096
EVAL_TASKS = [
    "hellaswag",
    {"task": "boolq", "dataset_kwargs": {"trust_remote_code": True}},
    "piqa",
    {"task": "social_iqa", "dataset_kwargs": {"trust_remote_code": True}},
    "winogrande",
    "openbookqa",
    "arc_easy",
    "arc_challenge",
    "race",
    "commonsense_qa",
    "copa",
    {
        "task": "lambada_openai",
        "dataset_kwargs": {"trust_remote_code": True},
        # lambada's default metrics include perplexity; the recipes log its accuracy only
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    },
    "triviaqa",
    # the released configs list mmlu in the two Llama-8B recipes only, yet MMLU curves were published for all 16 runs
    "mmlu",
]


@dataclass(frozen=True)
class Size:
    """What a model size fixes: the architecture, the tokenizer and the per-GPU batch / schedule length."""

    model: dict  # model.* keys of the Llama variant
    canon_rope_dim: int  # LlamaCanon rotates a quarter of each head
    tokenizer: str  # lingua tokenizer name
    tokenizer_path: str
    vocab_size: int
    batch_size: int  # sequences per GPU
    steps: int
    warmup: int
    dump_every: int
    eval_every: int


LLAMA2 = dict(tokenizer="sp", tokenizer_path="tokenizers/llama2/tokenizer.model", vocab_size=32000)
LLAMA3 = dict(tokenizer="tiktoken", tokenizer_path="tokenizers/llama3/tokenizer.model", vocab_size=128256)
# fmt: off
SIZES = {
    "1B": Size(
        model=dict(dim=2048, n_layers=24, n_heads=32, qk_norm=True, z_loss=True),
        canon_rope_dim=16, **LLAMA2, batch_size=8, steps=240_000, warmup=8000, dump_every=2000, eval_every=4000,
    ),
    "3B": Size(
        model=dict(dim=3072, n_layers=26, n_heads=24, qk_norm=True, z_loss=True),
        canon_rope_dim=32, **LLAMA2, batch_size=6, steps=160_000, warmup=4000, dump_every=1000, eval_every=2000,
    ),
    # grouped-query attention and the MLP width of Llama-3.1-8B; no QK-norm or z-loss
    "8B": Size(
        model=dict(
            dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden_dim=14336, ffn_dim_multiplier=1.0,
            multiple_of=256, rope_theta=100000.0,
        ),
        canon_rope_dim=32, **LLAMA3, batch_size=3, steps=160_000, warmup=3000, dump_every=1000, eval_every=2000,
    ),
}
# fmt: on

# (size, trillions of tokens, GPUs, lr, weight decay); each run exists as Llama and as LlamaCanon
RUNS = [
    ("1B", 1, 128, 0.002, 0.02),
    ("1B", 1, 128, 0.003, 0.0133),
    ("1B", 2, 256, 0.003, 0.0133),
    ("1B", 2, 256, 0.005, 0.008),
    ("3B", 1, 256, 0.002, 0.03),
    ("3B", 1, 256, 0.003, 0.02),
    ("8B", 1, 512, 0.002, 0.03),
    ("8B", 1, 512, 0.003, 0.02),
]
VARIANTS = ("Llama", "LlamaCanon")


@dataclass(frozen=True)
class Run:
    variant: str
    size: str
    trillions: int
    gpus: int
    lr: float
    weight_decay: float

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.size}-Nemo-{self.trillions}T-lr{self.lr}"

    @property
    def canon(self) -> bool:
        return self.variant == "LlamaCanon"


def all_runs() -> list[Run]:
    return [Run(variant, *run) for run in RUNS for variant in VARIANTS]


def recipe(run: Run) -> dict:
    """The recipe of one run as a plain dict, in the order the YAML shows it."""
    size = SIZES[run.size]
    model = dict(size.model)
    if run.canon:
        model.update(canon_set="ABCD", rope_dim=size.canon_rope_dim)
    data = dict(
        root_dir="/data",
        sources={"original_shuffled": 1.0},
        batch_size=size.batch_size,
        seq_len=SEQ_LEN,
        tokenizer=dict(name=size.tokenizer, path=size.tokenizer_path),
    )
    return published_recipe(
        run.name, size.steps, run.lr, run.weight_decay, size.warmup, model, data, size.dump_every, size.eval_every
    )


def published_recipe(name, steps, lr, weight_decay, warmup, model, data, dump_every, eval_every) -> dict:
    """A published pretraining run as a plain dict, in the order the YAML shows it: the run's own values inside what
    every Llama and linear-model recipe shares (seed 777, AdamW (0.9, 0.95, eps 1e-8), clip 1, cosine to 0.01, FSDP
    full_shard with compile in bf16, BOS and EOS, 3 dumps kept, async evaluation on the 14 benchmarks). `data` holds
    root_dir, sources, batch_size, seq_len and tokenizer. Also used by canon_linear_recipes/make_linear_recipes.py."""
    return {
        "name": name,
        "dump_dir": f"/checkpoint/{name}",
        "seed": 777,
        "steps": steps,
        "grad_acc_steps": 1,
        "probe_freq": None,
        "optim": dict(
            lr=lr,
            weight_decay=weight_decay,
            warmup=warmup,
            lr_min_ratio=0.01,
            epsilon=1e-8,
            beta1=0.9,
            beta2=0.95,
            clip=1.0,
            scheduler="cosine",
        ),
        "distributed": dict(
            fsdp_type="full_shard",
            compile=True,
            model_dtype="bf16",
            matmul_allow_tf32=False,
            selective_activation_checkpointing=False,
            tp_size=1,
        ),
        "model": model,
        "data": dict(
            root_dir=data["root_dir"],
            sources=data["sources"],
            batch_size=data["batch_size"],
            prefetch_size=1024,
            seq_len=data["seq_len"],
            n_views=2,
            load_async=True,
            add_bos=True,
            add_eos=True,
            tokenizer=data["tokenizer"],
        ),
        "profiling": {"run": False},
        "checkpoint": {"dump": {"every": dump_every, "keep": 3}, "eval": {"every": eval_every, "keep": -1}},
        "logging": {"freq": 10},
        "async_eval_gpus": 8,
        "eval": {
            "harness": {"tasks": EVAL_TASKS, "log_samples": False},
            "validation": None,
            "generator": {"max_tokens": 8192, "dtype": "bf16", "show_progress": True},
        },
    }


def tokens(run: Run) -> int:
    return run.gpus * SIZES[run.size].batch_size * SEQ_LEN * SIZES[run.size].steps


def recipe_text(run: Run) -> str:
    size = SIZES[run.size]
    header = (
        f"# {run.name}: the published run on {run.gpus} GPUs ({run.gpus // 8} nodes of 8),\n"
        f"# global batch {run.gpus * size.batch_size} x {SEQ_LEN} tokens, {size.steps} steps = "
        f"{tokens(run) / 1e12:.2f}T tokens.\n"
        "# Written by make_recipes.py from its table (edit the table, then rerun it). Set dump_dir, data.root_dir\n"
        "# and data.tokenizer.path for your cluster, here or as key=value overrides on the command line.\n"
    )
    return header + yaml.safe_dump(recipe(run), sort_keys=False, width=120)


def build_on_meta(run: Run):
    """The run's model built by the trainer's own LMTransformer on the meta device (no memory, no init)."""
    import torch

    if str(LINGUA_ROOT) not in sys.path:
        sys.path.insert(0, str(LINGUA_ROOT))
    from apps.main.train import TrainArgs
    from apps.main.transformer import LMTransformer
    from lingua.args import dataclass_from_dict

    args = dataclass_from_dict(TrainArgs, recipe(run))
    args.model.vocab_size = SIZES[run.size].vocab_size  # the trainer reads it from the tokenizer file
    args.model.max_seqlen = args.data.seq_len
    with torch.device("meta"):
        return LMTransformer(args.model)


def recipes_table(runs: list[Run]) -> str:
    header = [
        "recipe", "d-L-H (KV)", "MLP", "rope_dim", "QK-norm, z-loss", "Canon", "tokenizer (V)", "GPUs x batch",
        "steps", "tokens", "lr", "wd", "warmup", "dump/eval every", "parameters",
    ]  # fmt: skip
    rows = []
    for run in runs:
        size = SIZES[run.size]
        model = recipe(run)["model"]
        built = build_on_meta(run)
        kv = f" ({model['n_kv_heads']})" if "n_kv_heads" in model else ""
        rows.append([
            f"[{run.name}]({run.name}.yaml)",
            f"{model['dim']}-{model['n_layers']}-{model['n_heads']}{kv}",
            str(built.layers[0].feed_forward.w1.weight.shape[0]),
            str(model.get("rope_dim", "all")),
            "yes" if model.get("qk_norm") else "no",
            model.get("canon_set", "–"),
            f"{size.tokenizer} ({size.vocab_size})",
            f"{run.gpus} x {size.batch_size}",
            f"{size.steps:,}",
            f"{tokens(run) / 1e12:.3f}T",
            str(run.lr),
            str(run.weight_decay),
            str(size.warmup),
            f"{size.dump_every}/{size.eval_every}",
            f"{sum(p.numel() for p in built.parameters()):,}",
        ])  # fmt: skip
    return markdown_table(header, rows)


# ----------------------------------------------------------------------------------------------------------------
# Generated files: markdown tables, the generated block of a README, write or check
# ----------------------------------------------------------------------------------------------------------------

BLOCK_START = "<!-- generated by {script}: do not edit by hand -->"
BLOCK_END = "<!-- end of generated block -->"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def with_generated_block(readme: str, block: str, script: str) -> str:
    """`readme` with the text between its generated-block markers replaced by `block`."""
    start = BLOCK_START.format(script=script)
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(BLOCK_END), re.DOTALL)
    if not pattern.search(readme):
        raise ValueError(f"the README has no generated block; expected a line {start!r} followed by {BLOCK_END!r}")
    return pattern.sub(lambda _: f"{start}\n{block}{BLOCK_END}", readme)


def write_or_check(files: dict[Path, str], check: bool, stale: list[Path] = ()) -> int:
    """Write every file (check=False) or report those whose content differs (check=True). Returns an exit code.

    `stale` lists files that should not exist (e.g. a recipe whose run left the table); check reports them, write
    leaves them alone for the user to delete.
    """
    if not check:
        for path, text in files.items():
            write_atomic(path, text)
        print(f"wrote {len(files)} files under {os.path.commonpath([str(p.parent) for p in files])}")
        for path in stale:
            print(f"{path} is not in the table any more; delete it if it is not yours")
        return 0
    differing = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    problems = [f"{path} differs from what the script writes" for path in differing]
    problems += [f"{path} is not written by the script" for path in stale]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); rerun without --check to rewrite the files", file=sys.stderr)
        return 1
    print(f"all {len(files)} files are up to date")
    return 0


def write_recipe_folder(folder: Path, files: dict[Path, str], table: str, script: str, argv) -> int:
    """The command line of a recipe script: write (or with --check, compare) `files` and the table in the generated
    block of folder/README.md. YAML/JSON files of the folder that the script does not write (but tiny_overlay.yaml)
    are reported as stale."""
    parser = argparse.ArgumentParser(description=f"Write the recipes under {folder.name}/ from {script}'s table.")
    parser.add_argument("--check", action="store_true", help="compare the checked-in files instead of writing them")
    args = parser.parse_args(argv)
    readme = folder / "README.md"
    try:
        files = {**files, readme: with_generated_block(readme.read_text(), table, script)}
    except ValueError as error:
        print(f"error: {readme}: {error}", file=sys.stderr)
        return 1
    known = set(files) | {folder / "tiny_overlay.yaml"}
    stale = sorted(path for path in [*folder.glob("*.yaml"), *folder.glob("*.json")] if path not in known)
    return write_or_check(files, args.check, stale)


def main(argv=None) -> int:
    runs = all_runs()
    files = {HERE / f"{run.name}.yaml": recipe_text(run) for run in runs}
    return write_recipe_folder(HERE, files, recipes_table(runs), "make_recipes.py", argv)


if __name__ == "__main__":
    sys.exit(main())
