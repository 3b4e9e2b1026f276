"""A training run as the charts see it: what its dump dir's config.yaml says, and what its two metric logs hold.

The dump dir layout is contract 4 of ARCHITECTURE.md: `config.yaml` (the full config the trainer resolved and wrote),
`metrics.jsonl` (one line per logged training step: `global_step`, `acc_step`, `optim/total_tokens`, `loss/out`, ...)
and `metrics.eval.jsonl` (one line per evaluated checkpoint: `created_at`, `global_step`, then per task the metric dict
lm-eval returned, e.g. `"piqa": {"alias": "piqa", "acc,none": 0.61, "acc_stderr,none": 0.01}`).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from apps.main.generate import spec_for_checkpoint
from lingua.args import ConfigError, dataclass_from_dict, load_yaml

CANON_SITES = (
    "ABCD"  # upper-case letters of canon_set are Canon layers; a linear model's lower-case `b` is its own conv
)


class PlotError(ValueError):
    """A dump dir, or an option, that the charts cannot use."""


@dataclass
class Run:
    dump_dir: Path
    name: str  # config.yaml `name`, made unique among the runs plotted together
    family: str  # "Llama" (apps.main) or the linear model's model_name (GLA5, GDN2, Mamba2)
    canon_set: str
    size: int  # parameters of the model without its Canon layers: a Canon run and its baseline share it
    lr: float
    tokens_per_step: int
    steps: int  # optimizer steps the run was configured for
    evals: dict[int, dict]  # global_step -> its metrics.eval.jsonl line (the last one, if a step was evaluated twice)
    losses: dict[int, float]  # global_step -> loss/out

    @property
    def is_canon(self) -> bool:
        return any(site in self.canon_set for site in CANON_SITES)

    @property
    def planned_tokens(self) -> int:
        return self.steps * self.tokens_per_step

    def describe(self) -> str:
        variant = f"Canon {self.canon_set}" if self.is_canon else "baseline"
        return (
            f"{self.family} {format_count(self.size)}, {format_count(self.planned_tokens)} tokens, "
            f"lr {self.lr:g}, {variant}"
        )


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def eval_series(run: Run, task: str, metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one task metric; a checkpoint without it is skipped and the line joins its neighbours."""
    steps, values = [], []
    for step in sorted(run.evals):
        value = run.evals[step].get(task)
        if isinstance(value, dict) and is_number(value.get(metric)):
            steps.append(step)
            values.append(float(value[metric]))
    return steps, values


def format_count(n: int) -> str:
    """1_360_000_000 -> '1.3B': truncated to one decimal, as the published run names print sizes (1.36 B -> 1.3B)."""
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            tenths = n * 10 // scale  # integer arithmetic: no 2.3 -> 2.2999 surprises
            return f"{tenths // 10}.{tenths % 10}{unit}"
    return str(n)


def config_value(config: dict, dotted: str, path: Path):
    value = config
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise PlotError(f"{path} has no {dotted!r}; expected the full config that the trainer writes")
        value = value[key]
    return value


def tokens_per_step(config: dict, path: Path) -> int:
    """Tokens one optimizer step trains on. Every data-parallel rank (dp_replicate x dp_shard; the trainer resolves
    them from the world size before it writes config.yaml) runs grad_acc_steps micro-batches of batch_size rows of
    seq_len tokens."""
    factors = {
        key: config_value(config, key, path)
        for key in (
            "data.batch_size",
            "data.seq_len",
            "grad_acc_steps",
            "distributed.dp_replicate",
            "distributed.dp_shard",
        )
    }
    for key, value in factors.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PlotError(f"{path} has {key}={value!r}; expected a positive integer")
    return math.prod(factors.values())


def model_size(model: dict, path: Path) -> tuple[str, int]:
    """(family, parameter count without Canon layers), counted on the meta device with the app that trains the model
    (the one generation resolves a checkpoint's model section to): exact, and allocates nothing."""
    try:
        spec = spec_for_checkpoint(model)
    except ImportError as error:
        raise PlotError(f"{path} describes a model whose app cannot be imported ({error})") from None
    baseline = dict(model, canon_set="".join(c for c in str(model.get("canon_set", "")) if c not in CANON_SITES))
    try:
        args = dataclass_from_dict(spec.model_args, baseline, strict=False)
        with torch.device("meta"):
            network = spec.build(args)
    except (ConfigError, ValueError, TypeError) as error:
        raise PlotError(f"{path}: cannot build its model to count the parameters ({error})") from None
    family = str(getattr(args, "model_name", "Llama"))  # the linear apps name their family; apps.main is Llama
    return family, sum(p.numel() for p in network.parameters())


def read_metrics(path: Path) -> list[dict]:
    """The JSON lines of a metrics file, each checked to carry an integer global_step."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as error:
                raise PlotError(
                    f"{path} line {number} is not JSON ({error.msg}); expected one object per line"
                ) from None
            step = line.get("global_step") if isinstance(line, dict) else None
            if not isinstance(step, int) or isinstance(step, bool):
                raise PlotError(f"{path} line {number} has global_step={step!r}; expected the step it was logged at")
            lines.append(line)
    return lines


def read_losses(path: Path, step_tokens: int) -> dict[int, float]:
    """global_step -> loss/out of the lines logged at the end of an optimizer step (acc_step 0). The trainer's own
    token count must agree with config.yaml's tokens per step, or the x axis would be wrong."""
    losses = {}
    for line in read_metrics(path):
        if line.get("acc_step", 0) != 0:
            continue  # a log inside gradient accumulation (logging.acc_freq)
        step, loss = line["global_step"], line.get("loss/out")
        if not isinstance(loss, (int, float)):
            raise PlotError(f"{path} has loss/out={loss!r} at step {step}; expected a number")
        counted = line.get("optim/total_tokens")
        if counted is not None and counted != step * step_tokens:
            raise PlotError(
                f"{path} counts {counted} tokens at step {step}, but config.yaml gives {step_tokens} tokens per step "
                f"({step * step_tokens}); expected the config.yaml of this run"
            )
        losses[step] = float(loss)  # a step logged again after a resume: the newest line wins
    return losses


def load_run(dump_dir: str | Path) -> Run:
    dump_dir = Path(dump_dir)
    eval_path, train_path, config_path = (dump_dir / f for f in ("metrics.eval.jsonl", "metrics.jsonl", "config.yaml"))
    if not dump_dir.is_dir():
        raise PlotError(f"run dir {str(dump_dir)!r} does not exist; expected the dump_dir of a training run")
    if not eval_path.is_file() and not train_path.is_file():
        raise PlotError(
            f"run dir {str(dump_dir)!r} has neither metrics.eval.jsonl nor metrics.jsonl; "
            "expected the dump_dir of a training run"
        )
    if not config_path.is_file():
        raise PlotError(f"run dir {str(dump_dir)!r} has no config.yaml; expected the one the trainer writes there")
    try:
        config = load_yaml(str(config_path))
    except ConfigError as error:
        raise PlotError(str(error)) from None
    model = config_value(config, "model", config_path)
    if not isinstance(model, dict):
        raise PlotError(f"{config_path} has model={model!r}; expected a mapping of model fields")
    family, size = model_size(model, config_path)
    step_tokens = tokens_per_step(config, config_path)
    return Run(
        dump_dir=dump_dir,
        name=str(config_value(config, "name", config_path)),
        family=family,
        canon_set=str(model.get("canon_set") or ""),
        size=size,
        lr=float(config_value(config, "optim.lr", config_path)),
        tokens_per_step=step_tokens,
        steps=int(config_value(config, "steps", config_path)),
        evals={line["global_step"]: line for line in read_metrics(eval_path)} if eval_path.is_file() else {},
        losses=read_losses(train_path, step_tokens) if train_path.is_file() else {},
    )


def load_runs(dump_dirs: list[str]) -> list[Run]:
    """Every dump dir as a Run; runs sharing a config name are told apart by their dump dir."""
    seen = set()
    for dump_dir in dump_dirs:
        key = Path(dump_dir).resolve()
        if key in seen:
            raise PlotError(f"run dir {dump_dir!r} is given twice; expected each dump_dir once")
        seen.add(key)
    runs = [load_run(dump_dir) for dump_dir in tqdm(dump_dirs, desc="reading runs", unit="run")]
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.name} ({run.dump_dir})"
    return runs
