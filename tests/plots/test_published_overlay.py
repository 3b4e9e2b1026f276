"""`python -m apps.plots.training_curves --published llama|linear [--runs ...]`: the published curves exactly as
published (values, colours, dashes), and a user's run drawn over the published run of the recipe it was trained
from, matched by its config, on the same token axis."""

import json
from pathlib import Path

import pytest

from apps.main.train import TrainArgs
from apps.plots.published import read_curves
from apps.plots.training_curves import main
from lingua.args import dump_config, parse_args
from lingua.metrics import MetricLogger

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPES = REPOSITORY / "canon_llama_recipes"
TASKS = [
    "arc_challenge", "arc_easy", "boolq", "commonsense_qa", "copa", "hellaswag", "lambada_openai", "mmlu",
    "openbookqa", "piqa", "race", "social_iqa", "triviaqa", "winogrande",
]  # fmt: skip


def read_figures(page: str) -> list[tuple[str, list, dict]]:
    decoder = json.JSONDecoder()
    figures, position = [], 0
    while (start := page.find("Plotly.newPlot(", position)) >= 0:
        position = start + len("Plotly.newPlot(")
        values = []
        for _ in range(3):
            while page[position] in " \n,":
                position += 1
            value, position = decoder.raw_decode(page, position)
            values.append(value)
        figures.append(tuple(values))
    return figures


def build(out: Path, *argv: str) -> list[tuple[str, list, dict]]:
    assert main([*argv, "--out", str(out)]) == 0
    return read_figures(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def llama_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llama") / "published.html"
    assert main(["--published", "llama", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def llama_page(llama_file) -> list[tuple[str, list, dict]]:
    return read_figures(llama_file.read_text(encoding="utf-8"))


def test_the_published_llama_curves_are_drawn_as_published(llama_file, llama_page):
    assert [f[0] for f in llama_page] == [f"task-{task}" for task in TASKS]
    page = llama_file.read_text(encoding="utf-8")
    assert "<script src" not in page and page.count("plotly.js v") == 1  # self-contained: works offline
    curves = {(c.run, c.task): c for c in read_curves("llama")}
    colours = {}
    for div_id, traces, layout in llama_page:
        task = div_id.removeprefix("task-")
        assert len(traces) == 16
        assert layout["title"]["text"] == f"Task: {task} ({curves[(traces[0]['name'], task)].metric})"
        assert layout["xaxis"]["title"]["text"] == "Pretrain tokens" and layout["yaxis"]["title"]["text"] == "Accuracy"
        for trace in traces:
            curve = curves[(trace["name"], task)]
            assert (trace["x"], trace["y"]) == (curve.tokens, curve.values)
            assert trace["line"]["dash"] == ("solid" if trace["name"].startswith("LlamaCanon") else "dot")
            assert "Tokens: %{x" in trace["hovertemplate"] and "Model: %{fullData.name}" in trace["hovertemplate"]
            colours.setdefault(trace["name"], set()).add(trace["line"]["color"])
    # the published colours: one per configuration, a Canon run shares its baseline's
    assert colours["Llama-1.3B-Nemo-1.0T-lr0.003"] == colours["LlamaCanon-1.3B-Nemo-1.0T-lr0.003"] == {"#1f77b4"}
    assert colours["Llama-8.0B-Nemo-1.0T-lr0.002"] == {"#2ca02c"} and colours["Llama-3.1B-Nemo-1.0T-lr0.002"] == {
        "#7f7f7f"
    }
    assert len({c for colour in colours.values() for c in colour}) == 8


def test_the_published_linear_curves_end_with_the_training_loss(tmp_path):
    figures = build(tmp_path / "linear.html", "--published", "linear")
    assert [f[0] for f in figures] == [f"task-{task}" for task in TASKS] + ["training-loss"]
    assert all(len(traces) == 48 for _, traces, _ in figures)
    loss_traces, loss_layout = figures[-1][1], figures[-1][2]
    assert loss_layout["title"]["text"] == "Training loss vs pretrain tokens (moving average = 50)"
    assert loss_layout["height"] == 600
    colour = {trace["name"]: trace["line"]["color"] for trace in loss_traces}
    assert colour["1.3B-GDN2CanonAbCD-Nemo-1.0T-lr0.002"] == colour["1.3B-GDN2conv-Nemo-1.0T-lr0.005"] == "#1f77b4"
    assert colour["8.0B-Mamba2conv-Nemo-1.0T-lr0.003"] == "#bcbd22"


def write_recipe_run(folder: Path, recipe: str, name: str | None = None, evals: int = 3) -> tuple[Path, int]:
    """A finished CPU run of `recipe` with tiny_overlay.yaml, as the trainer writes it: config.yaml, eval lines for
    three published tasks and one other, training losses. Returns (dump dir, tokens per step)."""
    overrides = [f"dump_dir={folder}"] + ([f"name={name}"] if name else [])
    args = parse_args(TrainArgs, [f"config=[{RECIPES / f'{recipe}.yaml'},{RECIPES / 'tiny_overlay.yaml'}]", *overrides])
    args.distributed.dp_replicate = 1  # what the trainer resolves before it writes config.yaml
    args.model.vocab_size, args.model.max_seqlen = args.data.tokenizer.vocab_size, args.data.seq_len
    folder.mkdir(parents=True)
    dump_config(args, str(folder / "config.yaml"))
    step_tokens = args.data.batch_size * args.data.seq_len
    with open(folder / "metrics.eval.jsonl", "w") as f:
        for step in range(5, 5 * evals + 1, 5):
            line = {"created_at": "2026-01-01T00:00:00+00:00", "global_step": step,
                    "arc_challenge": {"acc,none": 0.2, "acc_norm,none": 0.25 + step / 1000},
                    "triviaqa": {"exact_match,remove_whitespace": step / 1000},
                    "piqa": {"acc,none": 0.5 + step / 1000}, "tiny_mc": {"acc,none": 0.5}}  # fmt: skip
            f.write(json.dumps(line) + "\n")
    with MetricLogger(folder / "metrics.jsonl") as logger:
        for step in range(1, 5 * evals + 1):
            logger.log({"global_step": step, "acc_step": 0, "optim/total_tokens": step * step_tokens,
                        "loss/out": 9.0 - step / 10})  # fmt: skip
    return folder, step_tokens


def test_a_run_is_drawn_over_the_published_run_of_its_recipe(llama_page, tmp_path):
    run, step_tokens = write_recipe_run(tmp_path / "mine", "LlamaCanon-1B-Nemo-1T-lr0.003")
    page = tmp_path / "page.html"
    figures = {
        f[0]: f for f in build(page, "--published", "llama", "--runs", str(run), "--log-x", "--loss-stride", "1")
    }
    assert list(figures) == [f"task-{task}" for task in TASKS] + ["training-loss"]
    published = {f[0]: f for f in llama_page}
    # the published metric of each task: arc_challenge acc_norm, triviaqa exact_match (remove_whitespace), piqa acc
    for task, values in (("arc_challenge", [0.255, 0.26, 0.265]), ("triviaqa", [0.005, 0.01, 0.015]),
                         ("piqa", [0.505, 0.51, 0.515])):  # fmt: skip
        _, traces, layout = figures[f"task-{task}"]
        assert traces[:16] == published[f"task-{task}"][1]  # the published traces unchanged
        (mine,) = traces[16:]
        (theirs,) = [t for t in traces[:16] if t["name"] == "LlamaCanon-1.3B-Nemo-1.0T-lr0.003"]
        assert mine["name"] == "LlamaCanon-1B-Nemo-1T-lr0.003 (yours)"
        assert mine["x"] == [step * step_tokens for step in (5, 10, 15)] and mine["y"] == pytest.approx(values)
        assert (mine["line"]["color"], mine["line"]["dash"]) == (theirs["line"]["color"], "solid")
        assert mine["legendgroup"] == theirs["legendgroup"] == "LlamaCanon-1B-Nemo-1T-lr0.003"
        assert "published as LlamaCanon-1.3B-Nemo-1.0T-lr0.003" in mine["meta"]
        assert layout["xaxis"]["type"] == "log"
    assert len(figures["task-boolq"][1]) == 16  # not evaluated on boolq: nothing drawn over it
    (loss,) = figures["training-loss"][1]
    assert loss["x"][-1] == 15 * step_tokens and loss["line"]["color"] == "#1f77b4"


def test_a_renamed_run_is_matched_by_its_settings_or_by_match(tmp_path, capsys):
    unique, _ = write_recipe_run(tmp_path / "a", "Llama-1B-Nemo-1T-lr0.002", name="my-run")
    figures = build(tmp_path / "a.html", "--published", "llama", "--runs", str(unique))
    (mine,) = figures[0][1][16:]
    assert mine["legendgroup"] == "Llama-1B-Nemo-1T-lr0.002" and mine["line"]["dash"] == "dot"
    # 1T and 2T recipes differ only in their GPU count, which a config does not hold
    ambiguous, _ = write_recipe_run(tmp_path / "b", "LlamaCanon-1B-Nemo-2T-lr0.003", name="other-run")
    assert main(["--published", "llama", "--runs", str(ambiguous), "--out", str(tmp_path / "b.html")]) == 1
    err = capsys.readouterr().err
    assert "matches the recipes ['LlamaCanon-1B-Nemo-1T-lr0.003', 'LlamaCanon-1B-Nemo-2T-lr0.003']" in err
    assert f"--match {ambiguous}=RECIPE" in err and not (tmp_path / "b.html").exists()
    figures = build(tmp_path / "b.html", "--published", "llama", "--runs", str(ambiguous),
                    "--match", f"{ambiguous}=LlamaCanon-1B-Nemo-2T-lr0.003")  # fmt: skip
    (mine,) = figures[0][1][16:]
    assert mine["legendgroup"] == "LlamaCanon-1B-Nemo-2T-lr0.003" and mine["line"]["color"] == "#9467bd"


def test_bad_options_are_one_clear_error(tmp_path, capsys):
    out = str(tmp_path / "x.html")
    assert main(["--out", out]) == 1
    assert "nothing to draw" in capsys.readouterr().err
    run, _ = write_recipe_run(tmp_path / "run", "Llama-1B-Nemo-1T-lr0.002")
    assert main(["--runs", str(run), "--match", f"{run}=Llama-1B-Nemo-1T-lr0.002", "--out", out]) == 1
    assert "expected --published too" in capsys.readouterr().err
    assert main(["--published", "llama", "--runs", str(run), "--match", f"{run}=Llama-9B", "--out", out]) == 1
    assert "'Llama-9B', which is not a published recipe" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
