"""The main job with several seeds (`make demo SEEDS=N`), and the parts of the demo that a short run cannot show: the
summary's mean and range over seeds, the Hugging Face agreement check refusing unequal counts, a failing training
run, the options refused before anything is written, and reading a metrics log that is still being written."""

import json
import re
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest
import yaml

from apps.demo import launch
from apps.demo.__main__ import main as demo_main
from apps.demo.launch import DemoError, MetricsFollower, TrainingRun, train_together
from apps.demo.summary import HfCheck, check_agreement, write_summary
from data_synthetic_pretrain import write_dataset

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
STEPS, SEEDS = 4, (3, 4)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    command = [sys.executable, "-m", "apps.demo", "--out", str(out), "--seed", str(SEEDS[0]), "--seeds", "2",
               "--steps", str(STEPS), "--train-samples", "200", "--test-samples", "8"]  # fmt: skip
    result = subprocess.run(command, cwd=LINGUA_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_each_seed_has_its_own_data_runs_logs_and_progress_bars(two_seeds):
    out, result = two_seeds
    tests = []
    for seed in SEEDS:
        folder = out / f"seed{seed}"
        [test_file] = (folder / "test").glob("*.jsonl")
        tests.append(test_file.read_text())
        for name in ("Llama", "LlamaCanon"):
            config = yaml.safe_load((folder / name / "config.yaml").read_text())
            assert (config["seed"], config["model"]["seed"], config["data"]["seed"]) == (seed, seed, seed)
            assert config["data"]["root_dir"] == str(folder / "data") and config["name"] == f"{name}-seed{seed}"
            assert (folder / f"{name}.log").stat().st_size > 0
            assert re.search(rf"{name} seed {seed}: 100%\|[^|]*\| {STEPS}/{STEPS} ", result.stderr)
            assert f"eval {name} seed {seed}: 100%" in result.stderr
    assert tests[0] != tests[1]  # the seed draws the data too
    assert (out / "LlamaCanon-hf" / "config.json").exists()
    html = (out / "chart.html").read_text()
    assert all(f"{name}-seed{seed}" in html for name in ("Llama", "LlamaCanon") for seed in SEEDS)


def test_the_summary_is_the_mean_and_range_of_each_seeds_log(two_seeds):
    out, _ = two_seeds
    summary = (out / "summary.md").read_text()
    assert "| step | Llama mean (min–max) | LlamaCanon mean (min–max) |" in summary
    rows = re.findall(r"^\| (\d+) \| (.+) \| (.+) \|$", summary, re.M)
    assert [int(row[0]) for row in rows if row[0].isdigit()] == [STEPS]
    for column, name in enumerate(("Llama", "LlamaCanon"), 1):
        logged = [
            json.loads((out / f"seed{seed}" / name / "metrics.eval.jsonl").read_text())["depo"]["acc,none"]
            for seed in SEEDS
        ]
        assert rows[-1][column] == f"{mean(logged):.3f} ({min(logged):.3f}–{max(logged):.3f})"
        for seed, value in zip(SEEDS, logged, strict=True):
            assert f"- {name} seed {seed} — {STEPS}: {value:.3f}" in summary
    assert f"LlamaCanon of seed {SEEDS[0]} (step {STEPS}) exported to {out / 'LlamaCanon-hf'}" in summary


def fake_run(folder: Path, accuracy: dict[int, float]) -> Path:
    """A dump dir with what the summary reads: the trainer's config.yaml keys and metrics.eval.jsonl."""
    folder.mkdir(parents=True)
    config = {"data": {"batch_size": 4, "seq_len": 32}, "grad_acc_steps": 1,
              "distributed": {"dp_replicate": 1, "dp_shard": 1}}  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [json.dumps({"global_step": step, "depo": {"acc,none": value}}) for step, value in accuracy.items()]
    (folder / "metrics.eval.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def hf_check(tmp_path: Path, correct: int, total: int, logged: float) -> HfCheck:
    return HfCheck(tmp_path / "hf", 0, tmp_path / "test.jsonl", 4, 20, correct, total, logged, [])


def test_the_summary_table_is_computed_from_the_logs_of_every_seed(tmp_path):
    logs = {
        "Llama": {0: {10: 0.1, 20: 0.2}, 1: {10: 0.3, 20: 0.5}, 2: {10: 0.2, 20: 0.35}},
        "LlamaCanon": {0: {10: 0.5, 20: 0.9}, 1: {10: 0.7, 20: 0.95}, 2: {10: 0.6, 20: 0.85}},
    }
    runs = {
        model: {seed: fake_run(tmp_path / f"seed{seed}" / model, values) for seed, values in seeds.items()}
        for model, seeds in logs.items()
    }
    write_summary(tmp_path / "summary.md", "t", "depo", runs, ["context"], hf_check(tmp_path, 3, 4, 0.75))
    summary = (tmp_path / "summary.md").read_text()
    assert "| 10 | 0.200 (0.100–0.300) | 0.600 (0.500–0.700) |" in summary
    assert "| 20 | 0.350 (0.200–0.500) | 0.900 (0.850–0.950) |" in summary
    assert "step s has seen s x 128 tokens" in summary
    # seed 1: 0.5 > half of 0.95; seeds 0 and 2 hold the claim
    assert "holds for 2 of 3 seeds" in summary and "- seed 1, step 20: LlamaCanon 0.950, Llama 0.500 — no" in summary
    assert "HF export answers 3 / 4 right (75.0%)" in summary


def test_the_hf_agreement_check_refuses_any_count_but_the_logged_one(tmp_path):
    check_agreement(hf_check(tmp_path, 3, 4, 0.75))
    check_agreement(hf_check(tmp_path, 1, 3, 1 / 3))
    for correct in (2, 4):
        with pytest.raises(ValueError, match=rf"answers {correct} / 4 .* logged accuracy 0.7500; expected the same"):
            check_agreement(hf_check(tmp_path, correct, 4, 0.75))


def test_a_failing_run_stops_its_sibling_and_names_its_log(tmp_path, monkeypatch):
    write_dataset("depo", "depo1-mini", "train", 50, 0, str(tmp_path / "data" / "depo"), progress=False)
    started, start = [], launch.start

    def recording_start(run, config):
        started.append(start(run, config))
        return started[-1]

    monkeypatch.setattr(launch, "start", recording_start)
    healthy = [f"data.root_dir={tmp_path / 'data'}", "steps=100000"]
    runs = [
        TrainingRun("healthy", tmp_path / "healthy", tmp_path / "healthy.log", healthy, 100000),
        TrainingRun("broken", tmp_path / "broken", tmp_path / "broken.log", ["no_such_key=1"], 10),
    ]
    log = re.escape(str(tmp_path / "broken.log"))
    with pytest.raises(DemoError, match=rf"^training broken failed \(exit \d+\); see {log}$"):
        train_together(runs, LINGUA_ROOT / "apps" / "demo" / "demo.yaml")
    assert started[0].poll() is not None  # stopped, not left running
    assert "no_such_key" in (tmp_path / "broken.log").read_text()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--seeds", "0"], "--seeds 0; expected a positive integer"),
        (["--steps", "-5"], "--steps -5; expected a positive integer"),
        (["--test-samples", "0"], "--test-samples 0; expected a positive integer"),
        (["--seed", "-1"], "--seed -1; expected a non-negative integer"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as stop:
        demo_main(["--out", str(tmp_path / "out"), *options])
    assert stop.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_metrics_follower_returns_complete_lines_once(tmp_path):
    path = tmp_path / "metrics.jsonl"
    follower = MetricsFollower(path)
    assert follower.new_lines() == []  # the trainer has not started yet
    path.write_text('{"global_step": 10, "loss/out": 3.5}\n{"global_step": 20, "loss/o')
    assert follower.new_lines() == [{"global_step": 10, "loss/out": 3.5}]
    with open(path, "a") as f:
        f.write('ut": 2.5}\n')
    assert follower.new_lines() == [{"global_step": 20, "loss/out": 2.5}]
    assert follower.new_lines() == []
