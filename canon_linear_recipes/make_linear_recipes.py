"""Write the 48 GLA5 / GDN2 / Mamba2 training recipes, their model JSONs and the README table from the table below.

    python canon_linear_recipes/make_linear_recipes.py           # write every file
    python canon_linear_recipes/make_linear_recipes.py --check   # exit 1 if a checked-in file differs

Per run `<name>.yaml` (the trainer's config; it loads strictly into `apps.gla.train.TrainArgs`),
`<name>_model_lingua.json` (its `model:` section as the trainer fills it in: LMTransformerArgs with the tokenizer's
vocabulary and max_seqlen = seq_len) and `<name>_model_HF.json` (the Hugging Face config that model section builds,
as `huggingface_linear` writes it). Also `lingua_modified/apps/gla/configs/{gla5,gdn2,mamba2}_canon_1B.yaml`: the 1B
lr0.002 Canon recipes with a checkpoint every 300 steps. Parameter counts come from building every model on the
meta device with the trainer's own LMTransformer.

What every published recipe shares (optimiser, parallelism, data loading, the 14 evaluation benchmarks) and the
markdown, README-block and write-or-check helpers are canon_llama_recipes/make_recipes.py's, imported from there.
"""

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LINGUA_ROOT = ROOT / "lingua_modified"
sys.path.insert(0, str(ROOT / "canon_llama_recipes"))
from make_recipes import markdown_table, published_recipe, write_recipe_folder  # noqa: E402


@dataclass(frozen=True)
class Size:
    """What a model size fixes in the published runs: architecture, tokenizer, context, GPUs and schedule."""

    dim: int
    n_layers: int
    n_heads: int
    hidden_dim: int | None  # MLP width; None = 2 * dim
    tokenizer: str
    tokenizer_path: str
    vocab_size: int
    seq_len: int
    gpus: int  # one sequence per GPU
    steps: int
    warmup: int
    dump_every: int
    eval_every: int
    weight_decay: dict  # lr -> weight decay


LLAMA2 = dict(tokenizer="sp", tokenizer_path="tokenizers/llama2/tokenizer.model", vocab_size=32000)
LLAMA3 = dict(tokenizer="tiktoken", tokenizer_path="tokenizers/llama3/tokenizer.model", vocab_size=128256)
# fmt: off
SIZES = {
    "1B": Size(2048, 24, 16, None, **LLAMA2, seq_len=16384, gpus=128, steps=480_000, warmup=12_000, dump_every=3000,
               eval_every=6000, weight_decay={0.002: 0.01, 0.003: 0.00667, 0.005: 0.004}),
    "3B": Size(3072, 26, 24, None, **LLAMA2, seq_len=12288, gpus=256, steps=320_000, warmup=8000, dump_every=2000,
               eval_every=4000, weight_decay={0.002: 0.005, 0.003: 0.01, 0.005: 0.006}),
    "8B": Size(4096, 32, 32, 9472, **LLAMA3, seq_len=4096, gpus=512, steps=480_000, warmup=9000, dump_every=1500,
               eval_every=6000, weight_decay={0.002: 0.01, 0.003: 0.00667}),
}
# fmt: on
FAMILIES = {  # model keys of each family
    "GLA5": dict(model_name="GLA5"),
    "GDN2": dict(model_name="GDN2"),
    "Mamba2": dict(model_name="Mamba2", mamba_ssm=128, mlp_type="mlp10"),
}
VARIANTS = {"Canon": "AbbCD", "conv": "bb"}  # Canon A, C, D plus the model's own short conv; the conv alone
# The published set's irregularities, kept so that every run is the published one:
# zeyuan_layernorm (it only names the GLA/GDN output norm `g_norm` in the checkpoint; same function) is on for every
# 8B GLA5/GDN2 run and for GLA5Canon-3B-lr0.005, and three 8B runs saved a checkpoint every 3000 steps, not 1500.
ZEYUAN_LAYERNORM = {"GLA5Canon-3B-Nemo-1T-lr0.005"}
DUMP_EVERY_3000 = {"GLA5conv-8B-Nemo-1T-lr0.002", "GLA5conv-8B-Nemo-1T-lr0.003", "Mamba2conv-8B-Nemo-1T-lr0.002"}
DATA_SOURCE = "quality=high=shuffled"  # the Nemotron-CC folder the published runs trained on


@dataclass(frozen=True)
class Run:
    family: str
    variant: str
    size: str
    lr: float

    @property
    def name(self) -> str:
        return f"{self.family}{self.variant}-{self.size}-Nemo-1T-lr{self.lr}"


def all_runs() -> list[Run]:
    return [
        Run(family, variant, size, lr)
        for family in FAMILIES
        for variant in VARIANTS
        for size in SIZES
        for lr in SIZES[size].weight_decay
    ]


def model_section(run: Run) -> dict:
    size = SIZES[run.size]
    model = dict(FAMILIES[run.family], dim=size.dim, n_layers=size.n_layers, n_heads=size.n_heads)
    model["canon_set"] = VARIANTS[run.variant]
    if size.hidden_dim is not None:
        model["hidden_dim"] = size.hidden_dim
    if run.family != "Mamba2" and (run.size == "8B" or run.name in ZEYUAN_LAYERNORM):
        model["zeyuan_layernorm"] = True
    return model


def recipe(run: Run, name: str | None = None, every: tuple[int, int] | None = None) -> dict:
    """The recipe of one run as a plain dict, in the order the YAML shows it; `name` and `every` (dump, eval)
    replace the run's own (for the apps/gla/configs copies)."""
    size = SIZES[run.size]
    name = name or run.name
    every = every or (3000 if run.name in DUMP_EVERY_3000 else size.dump_every, size.eval_every)
    data = dict(
        root_dir="/data",
        sources={DATA_SOURCE: 1.0},
        batch_size=1,
        seq_len=size.seq_len,
        tokenizer=dict(name=size.tokenizer, path=size.tokenizer_path),
    )
    lr, weight_decay = run.lr, size.weight_decay[run.lr]
    return {
        **published_recipe(name, size.steps, lr, weight_decay, size.warmup, model_section(run), data, *every),
        "eval_account": "",
        "eval_qos": "",
    }


def tokens(run: Run) -> int:
    size = SIZES[run.size]
    return size.gpus * size.seq_len * size.steps


def recipe_text(run: Run, name: str | None = None, every: tuple[int, int] | None = None) -> str:
    size = SIZES[run.size]
    title = f"{name}: the published run {run.name}" if name else f"{run.name}: the published run"
    header = (
        f"# {title} on {size.gpus} GPUs ({size.gpus // 8} nodes of 8),\n"
        f"# one sequence of {size.seq_len} tokens per GPU, {size.steps} steps = {tokens(run) / 1e12:.2f}T tokens.\n"
        "# Written by canon_linear_recipes/make_linear_recipes.py from its table (edit the table, then rerun it).\n"
        "# Set dump_dir, data.root_dir and data.tokenizer.path for your cluster, here or as key=value overrides.\n"
    )
    if every:
        header += f"# A checkpoint (and its evaluation) every {every[0]} steps instead of the recipe's.\n"
    return header + yaml.safe_dump(recipe(run, name, every), sort_keys=False, width=120)


def model_args(run: Run):
    """The run's LMTransformerArgs as the trainer fills them in (vocabulary from the tokenizer, context from data)."""
    if str(LINGUA_ROOT) not in sys.path:
        sys.path.insert(0, str(LINGUA_ROOT))
    from apps.gla.transformer import LMTransformerArgs

    size = SIZES[run.size]
    return LMTransformerArgs(**model_section(run), vocab_size=size.vocab_size, max_seqlen=size.seq_len)


def hf_json(run: Run) -> dict:
    """`config.to_dict()` of the Hugging Face config the model section builds, less the generic keys every
    transformers config carries (their set and the version stamp change with the installed transformers) and the
    remote-code map."""
    from transformers import PretrainedConfig

    from apps.gla.transformer import hf_config

    generic = (set(PretrainedConfig().to_dict()) - {"model_type"}) | {"auto_map"}
    return {k: v for k, v in hf_config(model_args(run)).to_dict().items() if k not in generic}


def json_text(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def build_on_meta(run: Run):
    import torch

    from apps.gla.transformer import LMTransformer

    with torch.device("meta"):
        return LMTransformer(model_args(run))


def recipes_table(runs: list[Run]) -> str:
    header = [
        "recipe", "model_name", "canon_set", "d-L-H", "MLP", "tokenizer (V)", "GPUs x seq_len", "steps", "tokens",
        "lr", "wd", "warmup", "dump/eval every", "parameters", "non-embedding",
    ]  # fmt: skip
    rows = []
    for run in runs:
        size, spec = SIZES[run.size], recipe(run)
        model = spec["model"]
        n_params = sum(p.numel() for p in build_on_meta(run).parameters())
        rows.append([
            f"[{run.name}]({run.name}.yaml)" + (" (zl)" if model.get("zeyuan_layernorm") else ""),
            model["model_name"],
            model["canon_set"],
            f"{size.dim}-{size.n_layers}-{size.n_heads}",
            str(size.hidden_dim or 2 * size.dim),
            f"{size.tokenizer} ({size.vocab_size})",
            f"{size.gpus} x {size.seq_len}",
            f"{size.steps:,}",
            f"{tokens(run) / 1e12:.3f}T",
            str(run.lr),
            str(size.weight_decay[run.lr]),
            str(size.warmup),
            f"{spec['checkpoint']['dump']['every']}/{spec['checkpoint']['eval']['every']}",
            f"{n_params:,}",
            f"{n_params - 2 * size.vocab_size * size.dim:,}",
        ])  # fmt: skip
    return markdown_table(header, rows)


def config_copies() -> dict[Path, str]:
    """apps/gla/configs/<family>_canon_1B.yaml: the 1B lr0.002 Canon recipe of each family, checkpoints every 300."""
    folder = LINGUA_ROOT / "apps" / "gla" / "configs"
    return {
        folder / f"{family.lower()}_canon_1B.yaml": recipe_text(
            Run(family, "Canon", "1B", 0.002), name=f"{family.lower()}_canon_1B", every=(300, 300)
        )
        for family in FAMILIES
    }


def main(argv=None) -> int:
    runs = all_runs()
    files = {}
    for run in runs:
        files[HERE / f"{run.name}.yaml"] = recipe_text(run)
        files[HERE / f"{run.name}_model_lingua.json"] = json_text(asdict(model_args(run)))
        files[HERE / f"{run.name}_model_HF.json"] = json_text(hf_json(run))
    files.update(config_copies())
    return write_recipe_folder(HERE, files, recipes_table(runs), "make_linear_recipes.py", argv)


if __name__ == "__main__":
    sys.exit(main())
