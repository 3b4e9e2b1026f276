"""The published training curves as figures, with your own runs drawn over the published run of their recipe.

A run is matched to the recipe it was trained from by its config.yaml: its `name` when that is a recipe's name (a
recipe sets `name` to itself, and tiny_overlay.yaml keeps it), otherwise the recipe whose settings it shares most
(the fewest settings that differ from the recipe's as the trainer resolves it: learning rate, weight decay,
Canon sites, ...; a tie is an error that `--match DUMP_DIR=RECIPE` settles). Your run
takes the colour and dash of its published run, with markers, on the same pretraining-token axis.
"""

import functools
import importlib
from collections import defaultdict
from pathlib import Path

import plotly.graph_objects as go

from apps.plots.published import LOSS_TASK, REPOSITORY, PublishedCurve, read_curves
from apps.plots.runs import PlotError, Run, config_value, eval_series
from lingua.args import ConfigError, dataclass_to_dict, load_yaml, parse_args

RECIPE_FOLDERS = {"llama": REPOSITORY / "canon_llama_recipes", "linear": REPOSITORY / "canon_linear_recipes"}
# the key in a run's metrics.eval.jsonl task dict of each metric the published charts plot
METRIC_KEYS = {"acc": "acc,none", "acc_norm": "acc_norm,none", "exact_match": "exact_match,remove_whitespace"}
MISSING = object()
# recipe settings that say nothing about which run it is (paths, names, evaluation)
NOT_IDENTIFYING = ("name", "dump_dir", "data.root_dir", "data.tokenizer.path", "eval", "async_eval_gpus", "logging")


def colour_key(recipe: str) -> str:
    """What the published charts colour by: Llama runs per configuration (a LlamaCanon run shares the colour of its
    Llama baseline), linear runs per size and architecture (all learning rates, Canon or not, alike)."""
    family, rest = recipe.split("-", 1)
    if family in ("Llama", "LlamaCanon"):
        return rest
    return f"{family.removesuffix('Canon').removesuffix('conv')}-{rest.split('-')[0]}"


def published_colours(curves: list[PublishedCurve], palette: list[str]) -> dict[str, str]:
    """Recipe -> colour: the palette in the order the published charts first draw each colour key."""
    keys: dict[str, str] = {}
    for curve in curves:
        keys.setdefault(colour_key(curve.recipe), palette[len(keys) % len(palette)])
    return {curve.recipe: keys[colour_key(curve.recipe)] for curve in curves}


def leaves(tree, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if not any(dotted == skip or dotted.startswith(skip + ".") for skip in NOT_IDENTIFYING):
            flat.update(leaves(value, dotted))
    return flat


@functools.cache
def resolved_recipes(which: str) -> dict[str, dict]:
    """Recipe name -> its settings as the trainer resolves them (defaults, then the recipe), flattened."""
    module = importlib.import_module("apps.gla.train" if which == "linear" else "apps.main.train")
    return {
        path.stem: leaves(dataclass_to_dict(parse_args(module.TrainArgs, [f"config={path}"])))
        for path in sorted(RECIPE_FOLDERS[which].glob("*-Nemo-*.yaml"))
    }


def match_recipes(which: str, runs: list[Run], forced: dict[Path, str]) -> dict[str, str]:
    """Run name -> the recipe it was trained from (see the module docstring)."""
    names = sorted(path.stem for path in RECIPE_FOLDERS[which].glob("*-Nemo-*.yaml"))
    resolved = None
    matched = {}
    for run in runs:
        recipe = forced.get(run.dump_dir.resolve())
        if recipe is not None and recipe not in names:
            raise PlotError(f"--match names {recipe!r}, which is not a published recipe; expected one of {names}")
        config_path = run.dump_dir / "config.yaml"
        try:
            config = load_yaml(str(config_path))
        except ConfigError as error:
            raise PlotError(str(error)) from None
        name = str(config_value(config, "name", config_path))
        if recipe is None and name in names:
            recipe = name
        if recipe is None:
            resolved = resolved or resolved_recipes(which)
            settings = leaves(config)
            differences = defaultdict(list)
            for candidate, wanted in resolved.items():
                keys = settings.keys() | wanted.keys()
                differing = sum(settings.get(key, MISSING) != wanted.get(key, MISSING) for key in keys)
                differences[differing].append(candidate)
            best = differences[min(differences)]
            if len(best) > 1:
                raise PlotError(
                    f"run {str(run.dump_dir)!r} (name {name!r}) matches the recipes {best} equally well; expected "
                    f"its config name to be a recipe's, or --match {run.dump_dir}=RECIPE"
                )
            recipe = best[0]
        matched[run.name] = recipe
    return matched


def published_figures(which: str, runs: list[Run], forced: dict[Path, str], palette: list[str], loss_series,
                      loss_window: int, layout: dict, loss_height: int) -> list[tuple[str, go.Figure]]:  # fmt: skip
    """(div id, figure) per published task (alphabetical), then the training loss where published or where a run
    logged it. `loss_series(run)` gives a run's (steps, losses smoothed over `loss_window` logged values; the
    published linear losses are smoothed over 50)."""
    curves = read_curves(which)
    colours = published_colours(curves, [colour.lower() for colour in palette])  # as the published pages write them
    matched = match_recipes(which, runs, forced)
    style = {curve.recipe: ("solid" if curve.is_canon else "dot") for curve in curves}
    published_names = {curve.recipe: curve.run for curve in curves}
    by_task: dict[str, list[PublishedCurve]] = defaultdict(list)
    for curve in curves:
        by_task[curve.task].append(curve)
    if runs and LOSS_TASK not in by_task and any(run.losses for run in runs):
        by_task[LOSS_TASK] = []
    figures = []
    for task, task_curves in by_task.items():
        loss = task == LOSS_TASK
        figure = go.Figure()
        for curve in task_curves:
            figure.add_trace(
                go.Scatter(
                    x=curve.tokens,
                    y=curve.values,
                    name=curve.run,
                    legendgroup=curve.recipe,
                    meta=curve.recipe,
                    mode="lines",
                    line=dict(color=colours[curve.recipe], width=2, dash=style[curve.recipe]),
                    hovertemplate="Model: %{fullData.name} (published)<br>Recipe: %{meta}<br>Tokens: %{x:.4~s}<br>"
                    + ("Training loss" if loss else "Accuracy")
                    + ": %{y:.4f}<extra></extra>",
                )
            )
        metric = task_curves[0].metric if task_curves else None
        for run in runs:
            recipe = matched[run.name]
            if loss:
                steps, values = loss_series(run) if run.losses else ([], [])
            else:
                steps, values = eval_series(run, task, METRIC_KEYS[metric])
            if not steps:
                continue
            figure.add_trace(
                go.Scatter(
                    x=[step * run.tokens_per_step for step in steps],
                    y=values,
                    customdata=steps,
                    name=f"{run.name} (yours)",
                    legendgroup=recipe,
                    meta=f"{recipe}, published as {published_names[recipe]}",
                    mode="lines+markers",
                    marker=dict(size=6),
                    line=dict(color=colours[recipe], width=3, dash=style[recipe]),
                    hovertemplate="Model: %{fullData.name}<br>Recipe: %{meta}<br>Tokens: %{x:.4~s}<br>"
                    "Step: %{customdata}<br>" + ("Training loss" if loss else "Accuracy") + ": %{y:.4f}<extra></extra>",
                )
            )
        if loss:
            window = task_curves[0].metric.rsplit("_", 1)[1] if task_curves else loss_window
            title = f"Training loss vs pretrain tokens (moving average = {window})"
            figure.update_layout(layout, title_text=title, yaxis_title="Training loss", height=loss_height)
            figures.append(("training-loss", figure))
        else:
            figure.update_layout(layout, title_text=f"Task: {task} ({metric})", yaxis_title="Accuracy")
            figures.append((f"task-{task}", figure))
    return figures


def parse_matches(pairs: list[str] | None) -> dict[Path, str]:
    forced = {}
    for pair in pairs or []:
        folder, sep, recipe = pair.partition("=")
        if not sep or not folder or not recipe:
            raise PlotError(f"--match {pair!r}; expected DUMP_DIR=RECIPE")
        forced[Path(folder).resolve()] = recipe
    return forced
