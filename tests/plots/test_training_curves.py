"""apps.plots.training_curves: the page holds one figure per task plus the loss, each trace where and how it should be
(x in tokens, y from the eval logs, solid Canon / dotted baseline, a colour per configuration), and bad input fails
with one clear error before anything is written."""

import json
import re
from pathlib import Path

import pytest
import yaml

from apps.plots.runs import format_count, load_run
from apps.plots.training_curves import PALETTE, main, moving_average

EXPECTED_FIGURES = [
    ("task-arc_challenge", "Task: arc_challenge (acc_norm)", "acc_norm,none"),
    ("task-boolq", "Task: boolq (acc)", "acc,none"),
    ("task-hellaswag", "Task: hellaswag (acc_norm)", "acc_norm,none"),
    ("task-mmlu", "Task: mmlu (acc)", "acc,none"),
    ("task-triviaqa", "Task: triviaqa (exact_match)", "exact_match,remove_whitespace"),
]


def read_figures(page: str) -> list[tuple[str, list, dict]]:
    """(div id, traces, layout) of every Plotly.newPlot call embedded in the page."""
    decoder = json.JSONDecoder()
    figures = []
    for match in re.finditer(r"Plotly\.newPlot\(\s*", page):
        position = match.end()
        values = []
        for _ in range(3):  # div id, data, layout
            value, position = decoder.raw_decode(page, position)
            values.append(value)
            position = re.compile(r"\s*,\s*").match(page, position).end()
        figures.append(tuple(values))
    return figures


def build(runs, out: Path, *options: str) -> list[tuple[str, list, dict]]:
    assert main(["--runs", *map(str, runs), "--out", str(out), *options]) == 0
    return read_figures(out.read_text(encoding="utf-8"))


def run_dir(dump_dirs: list[Path], name: str) -> Path:
    (found,) = [d for d in dump_dirs if yaml.safe_load((d / "config.yaml").read_text())["name"] == name]
    return found


def eval_lines(dump_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (dump_dir / "metrics.eval.jsonl").read_text().splitlines()]


def test_page_holds_one_figure_per_task_and_the_loss(dump_dirs, four_runs, tmp_path):
    out = tmp_path / "curves.html"
    figures = build(four_runs, out, "--loss-window", "1", "--loss-stride", "1")
    page = out.read_text(encoding="utf-8")

    # self-contained: plotly.js inlined exactly once, nothing fetched
    assert re.search(r"<script[^>]*\bsrc=", page) is None
    assert page.count("plotly.js v") == 1
    assert [f[0] for f in figures] == [f[0] for f in EXPECTED_FIGURES] + ["training-loss"]  # mmlu subtasks: no figure

    by_name = {}
    for (div_id, traces, layout), (_, title, metric) in zip(figures, EXPECTED_FIGURES, strict=False):
        assert layout["title"]["text"] == title
        assert layout["yaxis"]["title"]["text"] == "Accuracy"
        task = div_id.removeprefix("task-")
        assert len(traces) == 4
        for trace in traces:
            lines = eval_lines(run_dir(four_runs, trace["name"]))
            assert trace["x"] == [line["global_step"] * dump_dirs.tokens_per_step for line in lines]
            assert trace["customdata"] == [line["global_step"] for line in lines]
            assert trace["y"] == [line[task][metric] for line in lines]
            by_name.setdefault(trace["name"], set()).add((trace["line"]["color"], trace["line"]["dash"]))

    for div_id, traces, layout in figures:
        assert layout["template"]["layout"]["plot_bgcolor"] == "white"  # plotly_white
        assert (layout["width"], layout["height"]) == (1000, 600 if div_id == "training-loss" else 500)
        assert layout["xaxis"]["title"]["text"] == "Pretrain tokens"
        assert layout["legend"]["title"]["text"] == "Model"
        assert layout["hovermode"] == "closest"
        for trace in traces:
            assert trace["mode"] == "lines" and trace["line"]["width"] == 2
            assert "Tokens: %{x" in trace["hovertemplate"] and "Checkpoint" not in trace["hovertemplate"]

    # every run keeps one style in all figures: Canon solid, baseline dotted; a Canon run and its baseline share a
    # colour, the two learning rates differ
    styles = {name: style.pop() for name, style in by_name.items() if len(style) == 1}
    assert len(styles) == 4
    assert styles["LlamaCanon-lr0.002"] == (styles["Llama-lr0.002"][0], "solid")
    assert styles["Llama-lr0.002"][1] == "dot"
    assert styles["LlamaCanon-lr0.003"] == (styles["Llama-lr0.003"][0], "solid")
    assert {styles["Llama-lr0.002"][0], styles["Llama-lr0.003"][0]} == {PALETTE[0], PALETTE[1]}

    loss_traces, loss_layout = figures[-1][1], figures[-1][2]
    assert loss_layout["yaxis"]["title"]["text"] == "Training loss"
    for trace in loss_traces:
        dump_dir = run_dir(four_runs, trace["name"])
        lines = [json.loads(line) for line in (dump_dir / "metrics.jsonl").read_text().splitlines()]
        assert trace["x"] == [line["optim/total_tokens"] for line in lines]
        assert trace["y"] == pytest.approx([line["loss/out"] for line in lines])
        assert trace["line"]["color"] == styles[trace["name"]][0]


def test_size_is_the_parameter_count_without_canon_layers(dump_dirs, tmp_path):
    baseline = load_run(dump_dirs.write(tmp_path / "base", "base", "", 0.002))
    canon = load_run(dump_dirs.write(tmp_path / "canon", "canon", "ABCD", 0.002))
    d, layers, vocab = dump_dirs.model["dim"], dump_dirs.model["n_layers"], dump_dirs.model["vocab_size"]
    hidden = 256  # int(8 d / 3) = 85, rounded up to multiple_of 256
    per_layer = 4 * d * d + 3 * d * hidden + 2 * d  # wq wk wv wo, w1 w2 w3, two RMSNorms
    assert baseline.size == canon.size == 2 * vocab * d + layers * per_layer + d
    assert (baseline.family, baseline.is_canon, canon.is_canon) == ("Llama", False, True)
    assert (
        baseline.tokens_per_step == dump_dirs.tokens_per_step
        and baseline.planned_tokens == 40 * dump_dirs.tokens_per_step
    )
    assert (format_count(1_369_000_000), format_count(8_030_000_000), format_count(1_006_632_960_000)) == (
        "1.3B",
        "8.0B",
        "1.0T",
    )
    assert format_count(2_300_000) == "2.3M" and format_count(999) == "999"


def test_colour_by_model_merges_learning_rates(four_runs, tmp_path):
    figures = build(four_runs, tmp_path / "curves.html", "--colour-by", "model", "--tasks", "boolq")
    assert [f[0] for f in figures] == ["task-boolq", "training-loss"]
    assert {trace["line"]["color"] for trace in figures[0][1]} == {PALETTE[0]}


def test_missing_points_are_skipped_and_the_newest_line_of_a_step_wins(dump_dirs, tmp_path):
    dump_dir = dump_dirs.write(tmp_path / "run", "run", "ABCD", 0.003)
    lines = eval_lines(dump_dir)
    del lines[1]["boolq"]  # checkpoint 20 was not evaluated on boolq
    rerun = dict(lines[2], boolq={"acc,none": 0.99})  # checkpoint 30 evaluated again after a requeue
    with open(dump_dir / "metrics.eval.jsonl", "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in [*lines, rerun])
    with open(dump_dir / "metrics.jsonl", "a") as f:  # a resume logs step 40 again
        f.write(json.dumps({"global_step": 40, "acc_step": 0, "optim/total_tokens": 40 * dump_dirs.tokens_per_step,
                            "loss/out": 7.5}) + "\n")  # fmt: skip
    figures = dict((f[0], f[1]) for f in build([dump_dir], tmp_path / "curves.html", "--loss-stride", "1"))
    (boolq,) = figures["task-boolq"]
    assert boolq["customdata"] == [10, 30, 40]
    assert boolq["y"] == [lines[0]["boolq"]["acc,none"], 0.99, lines[3]["boolq"]["acc,none"]]
    (mmlu,) = figures["task-mmlu"]
    assert mmlu["customdata"] == [10, 20, 30, 40]
    (loss,) = figures["training-loss"]
    assert loss["customdata"][-1] == 40 and len(loss["customdata"]) == 20


def test_loss_is_a_trailing_moving_average_subsampled_by_stride(dump_dirs, tmp_path):
    dump_dir = dump_dirs.write(tmp_path / "run", "run", "", 0.002, steps=30, log_every=1)
    losses = [json.loads(line)["loss/out"] for line in (dump_dir / "metrics.jsonl").read_text().splitlines()]
    window, stride = 4, 3
    expected = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))]  # fmt: skip
    assert moving_average(losses, window).tolist() == pytest.approx(expected)
    figures = build([dump_dir], tmp_path / "curves.html", "--loss-window", "4", "--loss-stride", "3")
    assert figures[-1][2]["title"]["text"] == "Training loss vs pretrain tokens (moving average = 4)"
    (loss,) = figures[-1][1]
    assert loss["customdata"] == list(range(1, 31, stride))
    assert loss["y"] == pytest.approx(expected[::stride])


def test_runs_with_the_same_name_are_told_apart_by_their_dump_dir(dump_dirs, tmp_path):
    runs = [
        dump_dirs.write(tmp_path / "one", "lingua", "", 0.002),
        dump_dirs.write(tmp_path / "two", "lingua", "", 0.002),
    ]
    figures = build(runs, tmp_path / "curves.html")
    assert sorted(trace["name"] for trace in figures[0][1]) == [f"lingua ({runs[0]})", f"lingua ({runs[1]})"]


def error_of(capsys, *argv: str) -> str:
    assert main(list(argv)) == 1
    return capsys.readouterr().err


def test_bad_input_is_one_clear_error_and_nothing_is_written(dump_dirs, four_runs, tmp_path, capsys):
    out = tmp_path / "curves.html"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text("name: x\n")
    assert f"run dir '{empty}' has neither metrics.eval.jsonl nor metrics.jsonl" in error_of(
        capsys, "--runs", str(four_runs[0]), str(empty), "--out", str(out)
    )
    assert "does not exist" in error_of(capsys, "--runs", str(tmp_path / "nowhere"), "--out", str(out))
    assert "is given twice" in error_of(capsys, "--runs", str(four_runs[0]), str(four_runs[0]), "--out", str(out))
    assert "task 'piqa' is in no run's metrics.eval.jsonl" in error_of(
        capsys, "--runs", str(four_runs[0]), "--out", str(out), "--tasks", "piqa"
    )
    assert "folder that does not exist" in error_of(
        capsys, "--runs", str(four_runs[0]), "--out", str(tmp_path / "no" / "c.html")
    )
    assert "--loss-window 0; expected a positive integer" in error_of(
        capsys, "--runs", str(four_runs[0]), "--out", str(out), "--loss-window", "0"
    )

    (four_runs[1] / "config.yaml").unlink()
    assert f"run dir '{four_runs[1]}' has no config.yaml" in error_of(
        capsys, "--runs", str(four_runs[1]), "--out", str(out)
    )

    text = (four_runs[2] / "config.yaml").read_text()
    (four_runs[2] / "config.yaml").write_text(text.replace("dp_replicate: 2", "dp_replicate: 1"))
    message = error_of(capsys, "--runs", str(four_runs[2]), "--out", str(out))
    step_tokens = dump_dirs.tokens_per_step
    assert f"counts {2 * step_tokens} tokens at step 2, but config.yaml gives {step_tokens // 2}" in message

    with open(four_runs[3] / "metrics.eval.jsonl", "a") as f:
        f.write('{"global_step": 50, "boolq": \n')
    assert "metrics.eval.jsonl line 5 is not JSON" in error_of(capsys, "--runs", str(four_runs[3]), "--out", str(out))
    assert not out.exists() and list(tmp_path.glob(".partial-*")) == []


def test_existing_output_is_kept_unless_forced(four_runs, tmp_path, capsys):
    out = tmp_path / "curves.html"
    out.write_text("mine")
    assert "already exists" in error_of(capsys, "--runs", str(four_runs[0]), "--out", str(out))
    assert out.read_text() == "mine"
    figures = build([four_runs[0]], out, "--force")
    assert len(figures) == len(EXPECTED_FIGURES) + 1
