"""apps/main/configs/eval.yaml and apps/gla/configs/eval.yaml: they load strictly, list exactly the recipes' lm-eval
tasks (all known to lm-eval), and evaluate a checkpoint from the command line (a DCP checkpoint straight from
training: tests/setup/test_walkthrough.py). The example training configs' eval sections load strictly too."""

import json
from pathlib import Path

import pytest
import yaml

from apps.gla.eval import main as gla_eval_main
from apps.gla.train import TrainArgs as LinearTrainArgs
from apps.main.eval import EvalArgs, check_eval_args, main
from apps.main.train import TrainArgs
from lingua.args import dataclass_from_dict, parse_args

from .test_eval import TASKS

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
REPOSITORY = LINGUA_ROOT.parent
EVAL_YAMLS = {"main": LINGUA_ROOT / "apps/main/configs/eval.yaml", "gla": LINGUA_ROOT / "apps/gla/configs/eval.yaml"}
RECIPES = {"main": REPOSITORY / "canon_llama_recipes", "gla": REPOSITORY / "canon_linear_recipes"}
DEBUG_YAML = LINGUA_ROOT / "apps" / "main" / "configs" / "debug.yaml"


@pytest.mark.parametrize("app", ["main", "gla"])
def test_eval_yaml_holds_the_recipes_tasks_and_loads_strictly(app):
    cfg = parse_args(EvalArgs, [f"config={EVAL_YAMLS[app]}"])
    recipes = sorted(RECIPES[app].glob("*-Nemo-*.yaml"))
    assert len(recipes) == {"main": 16, "gla": 48}[app]
    for recipe in recipes:
        section = yaml.safe_load(recipe.read_text())["eval"]
        assert cfg.harness.tasks == section["harness"]["tasks"], recipe.name
        assert cfg.harness.log_samples is section["harness"]["log_samples"] is False
        for key, value in section["generator"].items():
            assert getattr(cfg.generator, key) == value, (recipe.name, key)
    assert len(cfg.harness.tasks) == 14 and cfg.validation.max_steps == 1000


def test_every_eval_task_is_known_to_lm_eval():
    cfg = parse_args(EvalArgs, [f"config={EVAL_YAMLS['main']}"])
    assert check_eval_args(cfg) is not None  # raises on an unknown task name


TRAINING_CONFIGS = [
    path
    for app in ("main", "gla")
    for path in sorted((LINGUA_ROOT / "apps" / app / "configs").glob("*.yaml"))
    if path.name != "eval.yaml"
]


@pytest.mark.parametrize("config", TRAINING_CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_example_configs_and_their_eval_sections_load_strictly(config):
    args = parse_args(LinearTrainArgs if config.parent.parent.name == "gla" else TrainArgs, [f"config={config}"])
    if "debug" not in config.name:
        assert args.async_eval_gpus == 8 and args.eval is not None, config.name
    if args.eval is not None:
        eval_args = dataclass_from_dict(EvalArgs, args.eval, strict=True)
        assert eval_args.harness.tasks


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    questions = [
        ("The sky is", ["blue", "green"], 0),
        ("Ice is", ["hot", "cold"], 1),
        ("Cats say", ["woof", "meow"], 1),
    ]
    docs = [{"question": q, "choices": c, "answer": a} for q, c, a in questions]
    (folder / "tiny_mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "tiny_mc.yaml").write_text(TASKS["tiny_mc"].format(path=folder / "tiny_mc.jsonl"))
    return folder


def cpu_overrides(task_dir: Path) -> list[str]:
    return ["harness.tasks=[tiny_mc]", f"harness.include_path={task_dir}", "harness.include_defaults=false",
            "harness.bootstrap_iters=0", "generator.device=cpu", "generator.dtype=fp32", "validation=null"]  # fmt: skip


@pytest.mark.parametrize("app", ["main", "gla"])
def test_a_consolidated_checkpoint_is_evaluated_from_the_command_line(app, lingua_checkpoint, task_dir, tmp_path):
    folder = lingua_checkpoint()
    out, log = tmp_path / "evals", tmp_path / "run"
    arguments = [f"config={EVAL_YAMLS[app]}", f"ckpt_dir={folder}", f"dump_dir={out}", f"metric_log_dir={log}"]
    assert {"main": main, "gla": gla_eval_main}[app]([*arguments, *cpu_overrides(task_dir)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["results"]["tiny_mc"]["acc,none"] <= 1
    (line,) = [json.loads(x) for x in (log / "metrics.eval.jsonl").read_text().splitlines()]
    assert line["global_step"] == 10 and line["tiny_mc"] == results["results"]["tiny_mc"]  # the step of the folder
