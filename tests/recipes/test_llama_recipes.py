"""The 16 Llama / LlamaCanon recipes: each loads strictly into the trainer's TrainArgs and builds the model of its
name with the published parameter count over the published number of tokens; the script that writes them is in
sync with them; the tiny overlay keeps a recipe's structure and really trains on CPU."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import make_recipes
import pytest
import torch

from apps.main.eval import EvalArgs, check_eval_args
from apps.main.train import TrainArgs
from apps.main.transformer import LMTransformer
from data_synthetic_pretrain import write_dataset
from lingua.args import dataclass_from_dict, load_yaml, parse_args

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "canon_llama_recipes"
OVERLAY = RECIPES / "tiny_overlay.yaml"
LINGUA_ROOT = ROOT / "lingua_modified"

# (size, trillions of tokens, lr) of the published runs, each as Llama and LlamaCanon
RUNS = [
    ("1B", 1, "0.002"), ("1B", 1, "0.003"), ("1B", 2, "0.003"), ("1B", 2, "0.005"),
    ("3B", 1, "0.002"), ("3B", 1, "0.003"), ("8B", 1, "0.002"), ("8B", 1, "0.003"),
]  # fmt: skip
NAMES = [f"{variant}-{size}-Nemo-{t}T-lr{lr}" for size, t, lr in RUNS for variant in ("Llama", "LlamaCanon")]
NAME = re.compile(r"(Llama|LlamaCanon)-(1B|3B|8B)-Nemo-([12])T-lr([0-9.]+)")
PARAMETERS = {  # the published models' parameter counts
    ("Llama", "1B"): 1_364_396_032,
    ("LlamaCanon", "1B"): 1_366_460_416,
    ("Llama", "3B"): 3_141_331_968,
    ("LlamaCanon", "3B"): 3_144_633_344,
    ("Llama", "8B"): 8_030_261_248,
    ("LlamaCanon", "8B"): 8_035_766_272,
}
VOCAB = {"sp": 32000, "tiktoken": 128256}  # Llama-2 and Llama-3 tokenizers; their files are not needed to count

# the tasks of the published training curves
CURVE_TASKS = [
    "arc_challenge", "arc_easy", "boolq", "commonsense_qa", "copa", "hellaswag", "lambada_openai", "mmlu", "openbookqa",
    "piqa", "race", "social_iqa", "triviaqa", "winogrande",
]  # fmt: skip


def recipe_path(name: str) -> Path:
    return RECIPES / f"{name}.yaml"


def load(*paths: Path) -> TrainArgs:
    return parse_args(TrainArgs, [f"config=[{','.join(str(p) for p in paths)}]"])


def build_on_meta(args: TrainArgs) -> LMTransformer:
    """The model a run would train (vocab from the tokenizer's size, context from the data), without memory."""
    if args.model.vocab_size < 0:
        args.model.vocab_size = (
            args.data.tokenizer.vocab_size if args.data.tokenizer.name == "tokens" else VOCAB[args.data.tokenizer.name]
        )
    args.model.max_seqlen = args.data.seq_len
    with torch.device("meta"):
        return LMTransformer(args.model)


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def head_dim(args: TrainArgs) -> int:
    return args.model.head_dim or args.model.dim // args.model.n_heads


def test_the_folder_holds_exactly_the_published_recipes():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml") if p != OVERLAY) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_loads_strictly_and_builds_the_named_model(name):
    variant, size, trillions, lr = NAME.fullmatch(name).groups()
    args = load(recipe_path(name))
    assert args.name == name and args.optim.lr == float(lr)
    assert args.model.canon_set == ("ABCD" if variant == "LlamaCanon" else "")
    # LlamaCanon rotates a quarter of each head, Llama all of it
    assert args.model.rope_dim == (head_dim(args) // 4 if variant == "LlamaCanon" else None)
    assert n_parameters(build_on_meta(args)) == PARAMETERS[variant, size]

    # the published token count: steps x per-GPU batch x context x GPUs (named in the recipe's first line)
    gpus = int(re.search(r"on (\d+) GPUs", recipe_path(name).read_text().splitlines()[0]).group(1))
    tokens = args.steps * args.data.batch_size * args.data.seq_len * gpus
    assert abs(tokens / (int(trillions) * 1e12) - 1) < 0.01


def test_recipes_match_the_published_training_setups():
    """Every recipe against its row of table-params.png (canon_llama_results/training_setups.csv)."""
    with open(ROOT / "canon_llama_results" / "training_setups.csv", newline="") as f:
        setups = {row["runs"]: row for row in csv.DictReader(f)}
    for name in NAMES:
        _, size, trillions, lr = NAME.fullmatch(name).groups()
        row = setups[f"(Canon){size}-{trillions}T-lr{lr}"]
        args = load(recipe_path(name))
        gpus = int(re.search(r"on (\d+) GPUs", recipe_path(name).read_text()).group(1))
        model = args.model
        assert (model.n_layers, model.n_heads, model.n_kv_heads or model.n_heads, model.dim) == (
            int(row["layers"]), int(row["heads"]), int(row["kv_heads"]), int(row["dim"])
        ), name  # fmt: skip
        assert (gpus, args.data.batch_size, gpus * args.data.batch_size, args.steps) == (
            int(row["gpus"]), int(row["batch_per_gpu"]), int(row["global_batch"]), int(row["steps"])
        ), name  # fmt: skip
        assert (args.optim.lr, args.optim.weight_decay, args.optim.warmup) == (
            float(row["lr"]), float(row["weight_decay"]), int(row["warmup"])
        ), name  # fmt: skip
        assert (args.checkpoint.eval.every, args.checkpoint.dump.every) == (
            int(row["eval_every"]), int(row["dump_every"])
        ), name  # fmt: skip
        assert row["tokenizer"] in args.data.tokenizer.path, name


def test_eval_sections_load_strictly_into_eval_args_and_name_known_tasks():
    """The in-training evaluation config of every recipe is an EvalArgs (the released configs' `save_s3`
    and `save_consolidated_to_local` are gone), evaluates the 14 tasks of the published curves, and lm-eval knows them
    (the trainer checks this when it starts)."""
    sections = [load_yaml(recipe_path(name))["eval"] for name in NAMES]
    for name, section in zip(NAMES, sections, strict=True):
        cfg = dataclass_from_dict(EvalArgs, section)
        assert cfg.validation is None and cfg.generator.max_tokens == 8192 and not cfg.harness.log_samples, name
        tasks = [task if isinstance(task, str) else task["task"] for task in cfg.harness.tasks]
        assert sorted(tasks) == sorted(CURVE_TASKS), name
    assert all(section == sections[0] for section in sections)  # so checking one checks all
    check_eval_args(dataclass_from_dict(EvalArgs, sections[0]))


def test_the_reference_only_keys_are_rejected():
    data = load_yaml(recipe_path(NAMES[0]))
    data["checkpoint"]["read_s3"] = True
    with pytest.raises(ValueError, match="read_s3"):
        dataclass_from_dict(TrainArgs, data)
    with pytest.raises(ValueError, match="save_s3"):
        dataclass_from_dict(EvalArgs, {**data["eval"], "save_s3": True})


def test_the_script_writes_the_checked_in_files(tmp_path, capsys):
    assert make_recipes.main(["--check"]) == 0
    # and --check does notice a file that differs
    stale = tmp_path / "stale.yaml"
    stale.write_text("steps: 1\n")
    assert make_recipes.write_or_check({stale: "steps: 2\n"}, check=True) == 1
    assert stale.read_text() == "steps: 1\n"
    assert "stale.yaml differs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no generated block"):
        make_recipes.with_generated_block("# a README without markers\n", "| table |\n", "make_recipes.py")
    readme = "intro\n<!-- generated by s.py: do not edit by hand -->\nold\n<!-- end of generated block -->\nend\n"
    assert make_recipes.with_generated_block(readme, "new\n", "s.py") == readme.replace("old", "new")


@pytest.mark.parametrize("name", NAMES)
def test_tiny_overlay_keeps_the_structure_and_shrinks_the_rest(name):
    recipe, tiny = load(recipe_path(name)), load(recipe_path(name), OVERLAY)
    kept = ("canon_set", "canon_kernel", "canon_residual", "qk_norm", "z_loss", "rope_theta", "weight_tying")
    assert {k: getattr(tiny.model, k) for k in kept} == {k: getattr(recipe.model, k) for k in kept}
    assert (tiny.model.rope_dim is None) == (recipe.model.rope_dim is None)
    if name.split("-")[1] == "1B":  # the overlay's heads are as wide as the 1B recipes'
        assert head_dim(tiny) == head_dim(recipe)
        assert tiny.model.rope_dim == recipe.model.rope_dim
    optim = ("lr", "weight_decay", "scheduler", "lr_min_ratio", "beta1", "beta2", "clip")
    assert {k: getattr(tiny.optim, k) for k in optim} == {k: getattr(recipe.optim, k) for k in optim}
    assert (tiny.seed, tiny.data.sources) == (recipe.seed, recipe.data.sources)
    assert tiny.steps == 20 and tiny.eval is None and not tiny.distributed.compile
    assert tiny.distributed.model_dtype == "fp32" and tiny.data.tokenizer.name == "tokens"
    assert n_parameters(build_on_meta(tiny)) < 5_000_000


def losses(dump_dir: Path) -> list[float]:
    return [json.loads(line)["loss/out"] for line in (dump_dir / "metrics.jsonl").read_text().splitlines()]


def test_recipe_with_tiny_overlay_trains_on_cpu(tmp_path):
    name = "LlamaCanon-1B-Nemo-1T-lr0.003"
    write_dataset("lano", "cfg3f", "train", 200, 0, str(tmp_path / "data" / "original_shuffled"), progress=False)
    dump = tmp_path / "run"
    command = [
        sys.executable, "-m", "apps.main.train", f"config=[{recipe_path(name)},{OVERLAY}]", f"dump_dir={dump}",
        f"data.root_dir={tmp_path / 'data'}",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=LINGUA_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    per_step = losses(dump)
    assert len(per_step) == 20
    assert sum(per_step[-5:]) / 5 < 0.5 * sum(per_step[:5]) / 5
    # the run trained the recipe's architecture, scaled down
    params = json.loads((dump / "checkpoints" / "0000000020" / "params.json").read_text())["model"]
    recipe = load(recipe_path(name)).model
    assert (params["canon_set"], params["qk_norm"], params["z_loss"], params["rope_dim"]) == (
        recipe.canon_set, recipe.qk_norm, recipe.z_loss, recipe.rope_dim,
    )  # fmt: skip
    assert (params["dim"], params["n_layers"], params["vocab_size"]) == (128, 2, 10000)
