"""The 48 published GLA5 / GDN2 / Mamba2 recipes: each YAML loads strictly into apps.gla's TrainArgs and
builds the named model with the published parameter count over 1T tokens; the model JSONs are what that model
section builds; the script that writes them is in sync; the tiny overlay keeps a recipe's structure and trains."""

import csv
import functools
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import make_linear_recipes
import pytest
import torch

from apps.gla.train import TrainArgs
from apps.gla.transformer import LMTransformer, hf_config
from data_synthetic_pretrain import write_dataset
from huggingface_linear import GatedDeltaNetCanonConfig, GLACanonConfig, Mamba2CanonConfig
from lingua.args import load_yaml, parse_args

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "canon_linear_recipes"
OVERLAY = RECIPES / "tiny_overlay.yaml"
LINGUA_ROOT = ROOT / "lingua_modified"

# the published runs: family x variant x (three lrs for 1B and 3B, two for 8B)
LRS = {"1B": ("0.002", "0.003", "0.005"), "3B": ("0.002", "0.003", "0.005"), "8B": ("0.002", "0.003")}
NAMES = [
    f"{family}{variant}-{size}-Nemo-1T-lr{lr}"
    for family in ("GLA5", "GDN2", "Mamba2")
    for variant in ("Canon", "conv")
    for size, lrs in LRS.items()
    for lr in lrs
]
NAME = re.compile(r"(GLA5|GDN2|Mamba2)(Canon|conv)-(1B|3B|8B)-Nemo-1T-lr([0-9.]+)")
WEIGHT_DECAY = {  # the published recipes' lr -> weight decay per size
    "1B": {0.002: 0.01, 0.003: 0.00667, 0.005: 0.004},
    "3B": {0.002: 0.005, 0.003: 0.01, 0.005: 0.006},
    "8B": {0.002: 0.01, 0.003: 0.00667},
}
PARAMETERS = {  # published (total, non-embedding) for 1B / 3B / 8B
    ("GLA5", "Canon"): ((1_345_183_744, 1_214_111_744), (3_151_003_136, 2_954_395_136), (8_013_164_544, 6_962_491_392)),
    ("GLA5", "conv"): ((1_344_004_096, 1_212_932_096), (3_149_086_208, 2_952_478_208), (8_009_691_136, 6_959_017_984)),
    ("GDN2", "Canon"): ((1_345_135_360, 1_214_063_360), (3_152_202_464, 2_955_594_464), (8_017_229_824, 6_966_556_672)),
    ("GDN2", "conv"): ((1_343_955_712, 1_212_883_712), (3_150_285_536, 2_953_677_536), (8_013_756_416, 6_963_083_264)),
    ("Mamba2", "Canon"): ((1_354_302_592, 1_223_230_592), (3_166_446_928, 2_969_838_928), (8_039_545_856,
                                                                                             6_988_872_704)),
    ("Mamba2", "conv"): ((1_353_122_944, 1_222_050_944), (3_164_530_000, 2_967_922_000), (8_036_072_448,
                                                                                           6_985_399_296)),
}  # fmt: skip
SIZE_INDEX = {"1B": 0, "3B": 1, "8B": 2}
VOCAB = {"sp": 32000, "tiktoken": 128256}
CONFIG_CLASSES = {"GLACanon": GLACanonConfig, "GatedDeltaNetCanon": GatedDeltaNetCanonConfig,
                  "Mamba2Canon": Mamba2CanonConfig}  # fmt: skip
# the published set's irregularities
ZEYUAN_LAYERNORM = {n for n in NAMES if re.match(r"(GLA5|GDN2).*-8B-", n)} | {"GLA5Canon-3B-Nemo-1T-lr0.005"}
DUMP_EVERY_3000 = {"GLA5conv-8B-Nemo-1T-lr0.002", "GLA5conv-8B-Nemo-1T-lr0.003", "Mamba2conv-8B-Nemo-1T-lr0.002"}


def recipe_path(name: str) -> Path:
    return RECIPES / f"{name}.yaml"


def load(*paths: Path) -> TrainArgs:
    return parse_args(TrainArgs, [f"config=[{','.join(str(p) for p in paths)}]"])


def fill_in(args: TrainArgs) -> TrainArgs:
    """What the trainer fills in before building the model: the tokenizer's vocabulary and the data's context."""
    tokenizer = args.data.tokenizer
    args.model.vocab_size = tokenizer.vocab_size if tokenizer.name == "tokens" else VOCAB[tokenizer.name]
    args.model.max_seqlen = args.data.seq_len
    return args


@functools.cache
def recipe_args(name: str) -> TrainArgs:
    """The recipe parsed strictly and filled in (parsed once: parsing is most of these tests' time; do not mutate)."""
    return fill_in(load(recipe_path(name)))


def build_on_meta(args: TrainArgs) -> LMTransformer:
    with torch.device("meta"):
        return LMTransformer(args.model)


def gpus_of(name: str) -> int:
    return int(re.search(r"on (\d+) GPUs", recipe_path(name).read_text().splitlines()[0]).group(1))


def test_the_folder_holds_exactly_the_published_recipes_and_their_model_jsons():
    assert len(NAMES) == 48
    expected = {f"{n}{suffix}" for n in NAMES for suffix in (".yaml", "_model_lingua.json", "_model_HF.json")}
    found = {p.name for p in RECIPES.iterdir() if p.suffix in (".yaml", ".json") and p != OVERLAY}
    assert found == expected


@pytest.mark.parametrize("name", NAMES)
def test_recipe_loads_strictly_and_builds_the_named_model(name):
    family, variant, size, lr = NAME.fullmatch(name).groups()
    args = recipe_args(name)
    model = args.model
    assert args.name == name and model.model_name == family
    assert model.canon_set == ("AbbCD" if variant == "Canon" else "bb")
    assert (args.optim.lr, args.optim.weight_decay) == (float(lr), WEIGHT_DECAY[size][float(lr)])
    assert (model.mamba_ssm, model.mlp_type) == ((128, "mlp10") if family == "Mamba2" else (None, None))
    assert model.zeyuan_layernorm == (name in ZEYUAN_LAYERNORM)
    dump_every = 3000 if name in DUMP_EVERY_3000 else {"1B": 3000, "3B": 2000, "8B": 1500}[size]
    assert args.checkpoint.dump.every == dump_every

    total, non_embedding = PARAMETERS[family, variant][SIZE_INDEX[size]]
    n_params = sum(p.numel() for p in build_on_meta(args).parameters())
    assert n_params == total
    assert n_params - 2 * model.vocab_size * model.dim == non_embedding

    # 1T tokens: steps x per-GPU batch x context x GPUs (named in the recipe's first line)
    tokens = args.steps * args.data.batch_size * args.data.seq_len * gpus_of(name)
    assert abs(tokens / 1e12 - 1) < 0.01


@pytest.mark.parametrize("name", NAMES)
def test_model_jsons_are_what_the_model_section_builds(name):
    family = NAME.fullmatch(name).group(1)
    args = recipe_args(name)
    lingua = json.loads((RECIPES / f"{name}_model_lingua.json").read_text())
    assert lingua == json.loads(json.dumps(asdict(args.model)))

    hf = json.loads((RECIPES / f"{name}_model_HF.json").read_text())
    config = CONFIG_CLASSES[hf["model_type"]](**hf)  # loads unchanged
    assert config.to_dict() == hf_config(args.model).to_dict()
    # the fields that make each family what it is
    d = args.model.dim
    width = 9472 if d == 4096 else None
    assert (hf["hidden_size"], hf["num_hidden_layers"], hf["num_heads"]) == (d, args.model.n_layers, args.model.n_heads)
    assert hf["canon_set"] == args.model.canon_set and hf["tie_word_embeddings"] is False
    if family == "GLA5":
        assert (hf["expand_k"], hf["expand_v"], hf["output_gate_rank"], hf["use_short_conv"]) == (1, 2, 16, True)
        assert hf["intermediate_size"] == (width or 2 * d) and (hf["bos_token_id"], hf["eos_token_id"]) == (1, 2)
    elif family == "GDN2":
        assert (hf["head_dim"], hf["expand_v"], hf["use_gate"], hf["use_short_conv"]) == (128, 2, True, True)
        assert hf["intermediate_size"] == (width or 2 * d) and (hf["bos_token_id"], hf["eos_token_id"]) == (1, 2)
    else:
        assert (hf["head_dim"], hf["state_size"], hf["n_groups"], hf["expand"]) == (256, 128, 1, 2)
        assert (hf["mlp_type"], hf["noconv1d"], hf["intermediate_size"]) == ("mlp10", False, width)
        assert hf["time_step_limit"] == [0.0, math.inf] and (hf["bos_token_id"], hf["eos_token_id"]) == (0, 2)
    if family != "Mamba2":
        assert hf["zeyuan_layernorm"] == (name in ZEYUAN_LAYERNORM)


def test_recipes_match_the_published_training_setups():
    """Every recipe against its row of table-params.png (canon_linear_results/training_setups.csv)."""
    with open(ROOT / "canon_linear_results" / "training_setups.csv", newline="") as f:
        setups = {(row["size"], float(row["lr"])): row for row in csv.DictReader(f)}
    for name in NAMES:
        _, _, size, lr = NAME.fullmatch(name).groups()
        row = setups["1.3B" if size == "1B" else size, float(lr)]
        args = recipe_args(name)
        model = args.model
        assert (model.n_layers, model.n_heads, model.dim, model.hidden_dim or 2 * model.dim) == (
            int(row["layers"]), int(row["heads"]), int(row["dim"]), int(row["mlp_width"])
        ), name  # fmt: skip
        assert (args.data.seq_len, gpus_of(name) * args.data.batch_size, args.steps) == (
            int(row["context"]), int(row["global_batch"]), int(row["steps"])
        ), name  # fmt: skip
        assert (args.optim.weight_decay, args.optim.warmup, args.checkpoint.eval.every) == (
            float(row["weight_decay"]), int(row["warmup"]), int(row["eval_every"])
        ), name  # fmt: skip
        assert row["tokenizer"] in args.data.tokenizer.path, name


def test_eval_sections_are_the_llama_recipes_and_the_reference_slurm_keys_parse():
    """The linear runs were evaluated on the same 14 benchmarks as Llama: the eval sections equal the Llama recipes'
    (whose test checks them against lm-eval's task list). eval_account / eval_qos / exclude / world_size are the
    published linear recipes' extra keys."""
    llama = load_yaml(ROOT / "canon_llama_recipes" / "LlamaCanon-1B-Nemo-1T-lr0.003.yaml")["eval"]
    assert all(load_yaml(recipe_path(name))["eval"] == llama for name in NAMES)
    args = parse_args(
        TrainArgs,
        [f"config={recipe_path(NAMES[0])}", "eval_account=acct", "eval_qos=high", "exclude=node1", "world_size=128"],
    )
    assert (args.eval_account, args.eval_qos, args.exclude, args.world_size) == ("acct", "high", "node1", 128)
    with pytest.raises(ValueError, match="eval_acount"):
        parse_args(TrainArgs, [f"config={recipe_path(NAMES[0])}", "eval_acount=acct"])


def test_the_script_writes_the_checked_in_files_and_the_1B_configs():
    assert make_linear_recipes.main(["--check"]) == 0
    copy = load(LINGUA_ROOT / "apps" / "gla" / "configs" / "gla5_canon_1B.yaml")
    recipe = load(recipe_path("GLA5Canon-1B-Nemo-1T-lr0.002"))
    assert (copy.checkpoint.dump.every, copy.checkpoint.eval.every) == (300, 300)
    copy.checkpoint, copy.name, copy.dump_dir = recipe.checkpoint, recipe.name, recipe.dump_dir
    assert copy == recipe  # the app configs are the 1B lr0.002 Canon recipes, checkpointing more often


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith("lr0.002")])  # every family, variant and size
def test_tiny_overlay_keeps_the_structure_and_shrinks_the_rest(name):
    recipe, tiny = recipe_args(name), fill_in(load(recipe_path(name), OVERLAY))
    kept = ("model_name", "canon_set", "mamba_ssm", "mlp_type", "zeyuan_layernorm", "weight_tying")
    assert {k: getattr(tiny.model, k) for k in kept} == {k: getattr(recipe.model, k) for k in kept}
    config, tiny_config = hf_config(recipe.model), hf_config(tiny.model)
    heads = ("head_dim", "head_v_dim", "state_size") if config.model_type != "GLACanon" else ()
    for field in heads:
        if hasattr(config, field):
            assert getattr(tiny_config, field) == getattr(config, field), field
    if config.model_type == "GLACanon":  # per-head key and value widths
        assert tiny_config.key_dim // tiny_config.num_heads == config.key_dim // config.num_heads
        assert tiny_config.value_dim // tiny_config.num_heads == config.value_dim // config.num_heads
    optim = ("lr", "weight_decay", "scheduler", "lr_min_ratio", "beta1", "beta2", "clip")
    assert {k: getattr(tiny.optim, k) for k in optim} == {k: getattr(recipe.optim, k) for k in optim}
    assert (tiny.seed, tiny.data.sources) == (recipe.seed, recipe.data.sources)
    assert tiny.steps == 20 and tiny.eval is None and not tiny.distributed.compile
    assert sum(p.numel() for p in build_on_meta(tiny).parameters()) < 5_000_000


def test_recipe_with_tiny_overlay_trains_on_cpu(tmp_path):
    name = "Mamba2Canon-1B-Nemo-1T-lr0.003"
    write_dataset("lano", "cfg3f", "train", 200, 0, str(tmp_path / "data" / "quality=high=shuffled"), progress=False)
    dump = tmp_path / "run"
    command = [
        sys.executable, "-m", "apps.gla.train", f"config=[{recipe_path(name)},{OVERLAY}]", f"dump_dir={dump}",
        f"data.root_dir={tmp_path / 'data'}",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=LINGUA_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    per_step = [json.loads(line)["loss/out"] for line in (dump / "metrics.jsonl").read_text().splitlines()]
    assert len(per_step) == 20
    assert sum(per_step[-5:]) / 5 < 0.5 * sum(per_step[:5]) / 5
    params = json.loads((dump / "checkpoints" / "0000000020" / "params.json").read_text())["model"]
    assert (params["model_name"], params["canon_set"], params["mamba_ssm"], params["mlp_type"]) == (
        "Mamba2", "AbbCD", 128, "mlp10",
    )  # fmt: skip
    assert (params["dim"], params["n_layers"], params["vocab_size"]) == (128, 2, 10000)
