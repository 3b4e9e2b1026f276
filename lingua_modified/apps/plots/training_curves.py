"""Interactive training curves of any number of runs, as one self-contained HTML page:

    python -m apps.plots.training_curves --runs DUMP_DIR [DUMP_DIR ...] --out curves.html
    python -m apps.plots.training_curves --published llama|linear [--runs DUMP_DIR ...] --out curves.html

With --published, the page shows the reference's published curves (canon_*_results/published/) with each of your
runs drawn over the published run of the recipe it was trained from (see apps/plots/overlay.py); without --runs it
shows the published curves alone.

One Plotly figure per evaluated task (alphabetical; the metric the published charts use, e.g. acc_norm for hellaswag),
then one training-loss figure. x = pretraining tokens (global_step x the run's tokens per step). Canon runs are solid,
baselines dotted, and a Canon run shares its colour with the baseline of the same configuration. plotly.js is embedded
once, so the page works offline. Only the dump dirs' config.yaml, metrics.eval.jsonl and metrics.jsonl are read.
"""

import argparse
import html
import os
import sys

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from apps.plots.overlay import parse_matches, published_figures
from apps.plots.runs import PlotError, Run, eval_series, format_count, is_number, load_runs
from lingua.args import write_atomic

# the metric each published chart plots; other tasks use the first of METRIC_PREFERENCE they report
PUBLISHED_METRICS = {
    "arc_challenge": "acc_norm,none",
    "hellaswag": "acc_norm,none",
    "openbookqa": "acc_norm,none",
    "triviaqa": "exact_match,remove_whitespace",
}
METRIC_PREFERENCE = ("acc,none", "acc_norm,none", "exact_match,none", "exact_match,remove_whitespace")
NOT_METRICS = ("alias", "name", "sample_len", "sample_count")  # numbers in lm-eval's task dict that are not scores
ACCURACIES = ("acc", "acc_norm", "exact_match")
PALETTE = qualitative.D3  # the published charts' colours, in order
FIGURE_LAYOUT = dict(
    template="plotly_white",
    width=1000,
    height=500,
    hovermode="closest",
    xaxis_title="Pretrain tokens",
    legend_title_text="Model",
)
LOSS_HEIGHT = 600


def find_tasks(runs: list[Run]) -> list[str]:
    """The tasks the runs were evaluated on, alphabetically. A group (mmlu) is logged together with its subtasks
    (mmlu_humanities, mmlu_anatomy, ...): only the group gets a figure."""
    names = {
        task for run in runs for line in run.evals.values() for task, value in line.items() if isinstance(value, dict)
    }
    return sorted(task for task in names if not any(task.startswith(group + "_") for group in names))


def choose_metric(task: str, runs: list[Run]) -> str | None:
    """The `metric,filter` key plotted for a task: the published one, else the first of METRIC_PREFERENCE the task
    reports, else its first score in name order (None when the task has no score at all)."""
    keys = {
        key
        for run in runs
        for line in run.evals.values()
        if isinstance(line.get(task), dict)
        for key, value in line[task].items()
        if is_number(value) and key not in NOT_METRICS and "_stderr" not in key
    }
    for key in (PUBLISHED_METRICS.get(task), *METRIC_PREFERENCE):
        if key in keys:
            return key
    return min(keys) if keys else None


def moving_average(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over the last `window` values; the first window-1 points average what there is so far."""
    total = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (total[ends] - total[starts]) / (ends - starts)


def loss_series(run: Run, window: int, stride: int) -> tuple[list[int], list[float]]:
    steps = sorted(run.losses)
    smooth = moving_average([run.losses[s] for s in steps], window)
    return steps[::stride], smooth[::stride].tolist()


def colour_groups(runs: list[Run], colour_by: str) -> dict[str, str]:
    """Run name -> colour. `config`: one colour per (model, size, planned tokens, lr) as in the Llama charts;
    `model`: one per (model, size), all learning rates alike, as in the linear-model charts."""
    colours, groups = {}, {}
    for run in runs:
        key = (run.family, format_count(run.size))
        if colour_by == "config":
            key += (format_count(run.planned_tokens), run.lr)
        groups.setdefault(key, PALETTE[len(groups) % len(PALETTE)])
        colours[run.name] = groups[key]
    return colours


def curve_figure(title: str, y_title: str, series: list, colours: dict[str, str], height: int) -> go.Figure:
    """One figure; `series` holds (run, steps, values). The hover text names the x value as tokens (the published
    charts called it "Checkpoint") and adds the step and the run's configuration."""
    figure = go.Figure()
    for run, steps, values in series:
        figure.add_trace(
            go.Scatter(
                x=[step * run.tokens_per_step for step in steps],
                y=values,
                customdata=steps,
                meta=run.describe(),
                name=run.name,
                mode="lines",
                line=dict(color=colours[run.name], width=2, dash="solid" if run.is_canon else "dot"),
                hovertemplate=(
                    "Model: %{fullData.name}<br>%{meta}<br>Tokens: %{x:.4~s}<br>Step: %{customdata}<br>"
                    f"{y_title}: %{{y:.4f}}<extra></extra>"
                ),
            )
        )
    figure.update_layout(FIGURE_LAYOUT, title_text=title, yaxis_title=y_title, height=height)
    return figure


def build_figures(runs, tasks, colour_by: str, loss_window: int, loss_stride: int) -> list[tuple[str, go.Figure]]:
    """(div id, figure) for every task in `tasks` (None: all evaluated tasks), then the training loss."""
    runs = sorted(runs, key=lambda r: (r.size, r.family, r.planned_tokens, not r.is_canon, r.lr, r.name))
    colours = colour_groups(runs, colour_by)
    evaluated = find_tasks(runs)
    if tasks is None:
        tasks = evaluated
    for task in tasks:
        if not any(isinstance(line.get(task), dict) for run in runs for line in run.evals.values()):
            raise PlotError(f"task {task!r} is in no run's metrics.eval.jsonl; expected one of {evaluated}")
    figures = []
    for task in tasks:
        metric = choose_metric(task, runs)
        if metric is None:
            raise PlotError(f"task {task!r} reports no numeric metric in any run; expected e.g. 'acc,none'")
        name = metric.split(",")[0]
        series = [(run, *eval_series(run, task, metric)) for run in runs]
        y_title = "Accuracy" if name in ACCURACIES else name
        figure = curve_figure(f"Task: {task} ({name})", y_title, [s for s in series if s[1]], colours, 500)
        figures.append((f"task-{task}", figure))
    series = [(run, *loss_series(run, loss_window, loss_stride)) for run in runs if run.losses]
    if series:
        title = f"Training loss vs pretrain tokens (moving average = {loss_window})"
        figures.append(("training-loss", curve_figure(title, "Training loss", series, colours, LOSS_HEIGHT)))
    if not figures:
        raise PlotError("the runs hold no evaluations and no training losses; expected metric lines to plot")
    return figures


def render_page(figures: list[tuple[str, go.Figure]], title: str) -> str:
    """A bare HTML page with the figures one below the other; plotly.js is inlined once, with the first figure."""
    blocks = [
        figure.to_html(full_html=False, include_plotlyjs=i == 0, div_id=div_id, config={"responsive": True})
        for i, (div_id, figure) in enumerate(figures)
    ]
    body = "\n".join(f"<div>{block}</div>" for block in blocks)
    return (
        f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n</head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m apps.plots.training_curves",
        description="Interactive HTML charts (eval tasks and training loss vs pretraining tokens) of training runs.",
    )
    parser.add_argument("--runs", nargs="+", default=[], metavar="DUMP_DIR", help="training dump dirs")
    parser.add_argument(
        "--published",
        choices=("llama", "linear"),
        help="draw the published curves of the Llama or the linear runs, with --runs over their recipes' runs",
    )
    parser.add_argument(
        "--match", nargs="+", metavar="DUMP_DIR=RECIPE", help="with --published: the recipe a run was trained from"
    )
    parser.add_argument("--log-x", action="store_true", help="logarithmic token axis (small runs beside 1T tokens)")
    parser.add_argument("--out", required=True, metavar="FILE.html", help="the page to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks to plot (default: every evaluated task)")
    parser.add_argument(
        "--colour-by",
        choices=("config", "model"),
        default="config",
        help="one colour per model+size+tokens+lr (config) or per model+size (model)",
    )
    parser.add_argument("--loss-window", type=int, default=50, help="moving-average window, in logged loss values")
    parser.add_argument("--loss-stride", type=int, default=20, help="plot every this many smoothed loss values")
    parser.add_argument("--title", default="All Interactive Plots", help="the page title")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if os.path.exists(args.out) and not args.force:
            raise PlotError(f"--out {args.out!r} already exists; expected a new file (or pass --force to replace it)")
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise PlotError(f"--out {args.out!r} is in a folder that does not exist; expected an existing folder")
        for option in ("loss_window", "loss_stride"):
            if getattr(args, option) < 1:
                raise PlotError(f"--{option.replace('_', '-')} {getattr(args, option)}; expected a positive integer")
        if not args.runs and not args.published:
            raise PlotError("nothing to draw; expected --runs DUMP_DIR ..., --published llama|linear, or both")
        if args.match and not args.published:
            raise PlotError("--match is for runs drawn over the published curves; expected --published too")
        runs = load_runs(args.runs) if args.runs else []
        if args.published:
            forced = parse_matches(args.match)
            figures = published_figures(
                args.published, runs, forced, PALETTE, lambda run: loss_series(run, args.loss_window, args.loss_stride),
                args.loss_window, FIGURE_LAYOUT, LOSS_HEIGHT,
            )  # fmt: skip
        else:
            figures = build_figures(runs, args.tasks, args.colour_by, args.loss_window, args.loss_stride)
        if args.log_x:
            for _, figure in figures:
                figure.update_xaxes(type="log")
        write_atomic(args.out, render_page(figures, args.title))
    except PlotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    published = f" over the published {args.published} curves" if args.published else ""
    print(f"wrote {len(figures)} figures of {len(runs)} runs{published} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
