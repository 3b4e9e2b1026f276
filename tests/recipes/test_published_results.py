"""The published numbers in canon_llama_results/ and canon_linear_results/: the README tables are what the script
writes from the CSVs, and the CSVs agree with themselves, with each other and with the recipes (within the
rounding of what was published)."""

import csv
import re
from pathlib import Path

import make_tables

ROOT = Path(__file__).resolve().parents[2]
LLAMA = ROOT / "canon_llama_results"
LINEAR = ROOT / "canon_linear_results"
TASKS = ["LMB", "PIQA", "Hella", "Wino", "ARC-e", "ARC-c", "SIQA", "BoolQ", "COPA", "OBQA", "RACE", "CSQA", "MMLU"]
NOT_IN_AVG10 = {"LMB", "BoolQ", "COPA"}  # published columns that the 10-task average leaves out
# a cell and an average are each rounded to 0.1, so the mean of rounded cells may miss the rounded mean by 0.1
ROUNDING = 0.1 + 1e-9


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_readme_tables_are_what_the_script_writes(capsys):
    assert make_tables.main(["--check"]) == 0, capsys.readouterr().err


def test_every_csv_row_names_its_source_and_holds_numbers():
    for path in [*LLAMA.glob("*.csv"), *LINEAR.glob("*.csv")]:
        rows = read(path)
        assert rows, path
        for row in rows:
            assert re.search(r"\w\.(png|pdf)\b", row["source"]), (path, row)
    for row in read(LLAMA / "final_benchmarks.csv"):
        assert all(0 < float(row[t]) < 100 for t in [*TASKS, "Avg10", "avg13"]), row
        assert float(row["Wiki ppl"]) > float(row["LMB ppl"]) > 1, row


def test_published_averages_are_the_means_of_their_columns():
    rows = read(LLAMA / "final_benchmarks.csv")
    assert len(rows) == 16
    for row in rows:
        assert abs(mean(float(row[t]) for t in TASKS if t not in NOT_IN_AVG10) - float(row["Avg10"])) <= ROUNDING, row
        assert abs(mean(float(row[t]) for t in TASKS) - float(row["avg13"])) <= ROUNDING, row


def test_final_benchmarks_cover_exactly_the_recipes():
    runs = sorted(row["run"] for row in read(LLAMA / "final_benchmarks.csv"))
    recipes = sorted(p.stem for p in (ROOT / "canon_llama_recipes").glob("*-Nemo-*.yaml"))
    assert runs == recipes


def test_linear_pdf_llama_rows_are_the_best_over_lr_of_the_llama_table():
    """linear_model_best-0.pdf's Llama rows (best of lr 0.002/0.003 per cell, then the mean) recomputed from the
    final-checkpoint table of the other folder: two published sources that must agree."""
    final = {row["run"]: row for row in read(LLAMA / "final_benchmarks.csv")}
    size_of = {"1.3B": "1B", "3B": "3B", "8B": "8B"}
    variant_of = {"Canon-ABCD": "LlamaCanon", "original": "Llama"}
    llama_rows = [row for row in read(LINEAR / "best_lr_avg13.csv") if row["architecture"] == "Llama"]
    assert len(llama_rows) == 6
    for row in llama_rows:
        group = f"{variant_of[row['variant']]}-{size_of[row['size']]}-Nemo-1T"
        runs = [final[f"{group}-lr{lr}"] for lr in ("0.002", "0.003")]
        best = mean(max(float(run[t]) for run in runs) for t in TASKS)
        assert abs(best - float(row["avg13"])) <= ROUNDING, (row, best)


def test_linear_best_lr_table_pairs_every_model_with_its_baseline():
    pairs = {}
    for row in read(LINEAR / "best_lr_avg13.csv"):
        pairs.setdefault((row["size"], row["architecture"]), []).append(row["variant"])
    assert len(pairs) == 12  # 3 sizes x (GDN2, GLA5, Mamba2, Llama)
    for (size, architecture), variants in pairs.items():
        expected = ["Canon-ABCD", "original"] if architecture == "Llama" else ["Canon-AbCD", "conv"]
        assert sorted(variants) == expected, (size, architecture)


def test_training_setups_reach_the_published_token_counts():
    for row in read(LINEAR / "training_setups.csv"):  # every linear run is 1T tokens
        tokens = int(row["context"]) * int(row["global_batch"]) * int(row["steps"])
        assert abs(tokens / 1e12 - 1) < 0.01, row
    for row in read(LLAMA / "training_setups.csv"):
        trillions = int(re.fullmatch(r"(\d)T", row["tokens"]).group(1))
        assert int(row["gpus"]) * int(row["batch_per_gpu"]) == int(row["global_batch"]), row
        assert abs(int(row["global_batch"]) * 4096 * int(row["steps"]) / (trillions * 1e12) - 1) < 0.01, row
