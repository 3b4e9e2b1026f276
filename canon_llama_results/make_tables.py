"""Write the tables of canon_llama_results/README.md and canon_linear_results/README.md from their CSV files.

    python canon_llama_results/make_tables.py           # rewrite the generated block of both READMEs
    python canon_llama_results/make_tables.py --check   # exit 1 if a README differs from what it writes

The CSVs hold the numbers exactly as they were published (each row names its source figure, table or
PDF); nothing here corrects them. What the script derives (the best over learning rates, the check of the published
averages against the mean of their columns) is labelled as derived in the READMEs.
"""

import argparse
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "canon_llama_results"
LINEAR = ROOT / "canon_linear_results"
sys.path.insert(0, str(ROOT / "canon_llama_recipes"))
from make_recipes import markdown_table, with_generated_block, write_or_check  # noqa: E402

SCRIPT = "make_tables.py"
TASKS = ["LMB", "PIQA", "Hella", "Wino", "ARC-e", "ARC-c", "SIQA", "BoolQ", "COPA", "OBQA", "RACE", "CSQA", "MMLU"]
AVG10_TASKS = [task for task in TASKS if task not in ("LMB", "BoolQ", "COPA")]  # the published "Avg10"
PERPLEXITIES = ["Wiki ppl", "LMB ppl"]  # lower is better
ROUNDING = 0.1  # published cells and averages are rounded to 0.1: the mean of rounded cells may differ by this much


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sources(rows: list[dict]) -> str:
    return f"\nSource in the reference: {'; '.join(sorted({row['source'] for row in rows}))}.\n"


def csv_table(rows: list[dict]) -> str:
    """A markdown table of CSV rows (every column but `source`), followed by the sources the rows name."""
    columns = [c for c in rows[0] if c != "source"]
    return markdown_table(columns, [[row[c] for c in columns] for row in rows]) + sources(rows)


def column_means(row: dict) -> tuple[float, float]:
    """(mean of the ten Avg10 columns, mean of all thirteen) of a final_benchmarks row, from its rounded cells."""
    return (
        sum(float(row[t]) for t in AVG10_TASKS) / len(AVG10_TASKS),
        sum(float(row[t]) for t in TASKS) / len(TASKS),
    )


def best_over_lr(rows: list[dict]) -> dict[str, dict]:
    """Per run without its learning rate (e.g. `LlamaCanon-1B-Nemo-1T`): the best cell over its learning rates (max
    accuracy, min perplexity) and the averages of those bests, as the published *_best PDFs compute them."""
    groups = defaultdict(list)
    for row in rows:
        group, lr = re.fullmatch(r"(.+)-lr([0-9.]+)", row["run"]).groups()
        groups[group].append((lr, row))
    best = {}
    for group, members in groups.items():
        cells = {task: max(float(row[task]) for _, row in members) for task in TASKS}
        cells |= {ppl: min(float(row[ppl]) for _, row in members) for ppl in PERPLEXITIES}
        cells["Avg10"] = sum(cells[t] for t in AVG10_TASKS) / len(AVG10_TASKS)
        cells["avg13"] = sum(cells[t] for t in TASKS) / len(TASKS)
        cells["lrs"] = ",".join(lr for lr, _ in members)
        best[group] = cells
    return best


def published_averages(rows: list[dict]) -> list[tuple[str, str, str, float]]:
    """(run, average name, published value, mean of its rounded columns) for every published average."""
    return [
        (row["run"], name, row[name], mean)
        for row in rows
        for name, mean in zip(("Avg10", "avg13"), column_means(row), strict=True)
    ]


# the published result PDFs as tables: (heading, PDF CSV under published/, columns); every column of the PDFs
# appears in one table
HOPS = [f"{hops}-hop-{k}" for hops in (1, 2) for k in ("0k", "0.5k", "1k", "2k", "3k", "4k", "5k", "6k")]
JRT = ["JRT(avg12)", "FDA", "FDA2", "SWDE", "SWDE2", "NQ", "NQ2", "Squad", "Squad2", "TriviaQA", "TriviaQA2", "Drop",
       "Drop2"]  # fmt: skip
BABILONG = ["Babilong(avg20)"] + [f"babilong-qa{qa}-{k}k" for qa in range(1, 6) for k in (0, 1, 2, 4)]
NIAH = [f"niah-S{s}-{k}" for s in (1, 2, 3) for k in ("0.5k", "2k", "4k", "5k", "6k", "7k", "8k")]
PDF_TABLES = [
    ("lm-eval (accuracy %, perplexities)", "model-0", ["lm_eval(avg13)", *TASKS, *PERPLEXITIES]),
    ("JRT (accuracy %)", "model-0", JRT),
    ("Multi-hop retrieval, 1 and 2 hops at 0-6k tokens of context (accuracy %)", "model-0", HOPS),
    ("BABILong qa1-qa5 at 0/1/2/4k tokens of context (accuracy %)", "model-1", BABILONG),
    ("Needle in a haystack, NIAH-S1/S2/S3 at 0.5-8k tokens of context (accuracy %)", "model-1", NIAH),
]


def short_header(column: str) -> str:
    """A column name short enough for a wide markdown table: babilong-qa1-0k -> qa1-0k, niah-S1-0.5k -> S1-0.5k."""
    return column.removeprefix("babilong-").removeprefix("niah-")


def pdf_tables(folder: Path, prefix: str, best: bool) -> str:
    """Markdown tables of the published result PDFs `<prefix>_model[_best]-0/-1` (from their CSVs under
    published/), one per group of columns."""
    parts = []
    for heading, page, columns in PDF_TABLES:
        name = f"{prefix}_{page.replace('-', '_best-') if best else page}"
        rows = read_csv(folder / "published" / f"{name}.csv")
        labels = ["recipe", "lr"] if best else ["recipe"]
        header = [*labels, *map(short_header, columns)]
        parts += [
            f"\n#### {heading}\n\n",
            markdown_table(header, [[row[c] for c in labels] + [row[c] for c in columns] for row in rows]),
            f"\nSource in the reference: {name}.pdf ([`published/{name}.csv`](published/{name}.csv)).\n",
        ]
    return "".join(parts)


def llama_block() -> str:
    final = read_csv(LLAMA / "final_benchmarks.csv")
    best = best_over_lr(final)
    averages = published_averages(final)
    gaps = [average for average in averages if f"{average[3]:.1f}" != average[2]]  # not the rounded mean
    largest = max((abs(mean - float(value)), run, name) for run, name, value, mean in averages)
    parts = [
        "### Final checkpoints (accuracy %, perplexities)\n\n",
        csv_table(final),
        "\n### Best over learning rates (derived)\n\n",
        "Each cell is the best over the run's learning rates (highest accuracy, lowest perplexity) and the averages "
        "are means of those bests, as in the reference's `transformer_model_best-0.pdf`.\n\n",
        markdown_table(
            ["run", "lrs", *TASKS, "Avg10", "avg13", *PERPLEXITIES],
            [
                [group, cells["lrs"]]
                + [f"{cells[t]:.1f}" for t in (*TASKS, "Avg10", "avg13")]
                + [f"{cells[p]:.2f}" for p in PERPLEXITIES]
                for group, cells in best.items()
            ],
        ),
        "\n### Published averages against their columns (derived)\n\n",
        f"Largest gap between a published average and the mean of its rounded columns: {largest[0]:.3f} "
        f"({largest[1]}, {largest[2]}); gaps up to {ROUNDING} are rounding. Averages that are not the rounded mean "
        "of their published columns:\n\n",
        markdown_table(
            ["run", "average", "published", "mean of the columns"],
            [[run, name, value, f"{mean:.3f}"] for run, name, value, mean in gaps],
        )
        if gaps
        else "none.\n",
        "\n### Other models (Avg10)\n\n",
        csv_table(read_csv(LLAMA / "external_models.csv")),
        "\n### Training set-ups\n\n",
        csv_table(read_csv(LLAMA / "training_setups.csv")),
        "\n### Every published result table, per run\n",
        pdf_tables(LLAMA, "transformer", best=False),
        "\n### Every published result table, best over learning rates\n\n",
        "As published: each cell is the best over the run's learning rates, each average the mean of those bests.\n",
        pdf_tables(LLAMA, "transformer", best=True),
    ]
    return "".join(parts)


# the Llama rows of linear_model_best-0.pdf are the 1T runs of canon_llama_results
LLAMA_RUN_OF_SIZE = {"1.3B": "1B", "3B": "3B", "8B": "8B"}
LLAMA_VARIANTS = {"Canon-ABCD": "LlamaCanon", "original": "Llama"}


def llama_run(row: dict) -> str:
    """The canon_llama_results run (without its lr) of a Llama row of best_lr_avg13.csv."""
    return f"{LLAMA_VARIANTS[row['variant']]}-{LLAMA_RUN_OF_SIZE[row['size']]}-Nemo-1T"


def linear_block() -> str:
    rows = read_csv(LINEAR / "best_lr_avg13.csv")
    by_model = defaultdict(dict)
    for row in rows:
        by_model[(row["size"], row["architecture"])][row["variant"]] = row["avg13"]
    pivot = []
    for (size, architecture), variants in by_model.items():
        (canon_name, canon), (base_name, base) = sorted(variants.items(), key=lambda kv: not kv[0].startswith("Canon"))
        pivot.append([size, architecture, canon, f"{base} ({base_name})", f"{float(canon) - float(base):+.1f}"])
    llama_best = best_over_lr(read_csv(LLAMA / "final_benchmarks.csv"))
    checks = [
        [row["size"], row["variant"], row["avg13"], f"{llama_best[llama_run(row)]['avg13']:.3f}"]
        for row in rows
        if row["architecture"] == "Llama"
    ]
    parts = [
        "### Best-learning-rate avg13\n\n",
        markdown_table(["size", "architecture", "Canon", "without Canon", "gain"], pivot),
        sources(rows),
        "\nCanon-AbCD for the linear models (`canon_set: AbbCD` in their recipes), Canon-ABCD for Llama; without "
        "Canon = the models' own short convolution only (`conv`) or the original Llama.\n",
        "\n### Llama rows against canon_llama_results (derived)\n\n",
        "The Llama rows are the 1T runs of [`canon_llama_results`](../canon_llama_results/README.md); their best over "
        "learning rates recomputed from its final-checkpoint table:\n\n",
        markdown_table(["size", "Llama", "published avg13", "recomputed avg13"], checks),
        "\n### Training set-ups\n\n",
        csv_table(read_csv(LINEAR / "training_setups.csv")),
        "\n### Every published result table, best over learning rates\n\n",
        "As published: each cell is the best over the run's learning rates (2 or 3), each average the mean of those "
        "bests. The per-learning-rate tables (60 runs: the 48 linear and the 12 Llama-1T runs) are in "
        "[`published/linear_model-0.csv`](published/linear_model-0.csv) and "
        "[`published/linear_model-1.csv`](published/linear_model-1.csv).\n",
        pdf_tables(LINEAR, "linear", best=True),
    ]
    return "".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the READMEs instead of writing them")
    args = parser.parse_args(argv)
    files = {}
    for folder, block in ((LLAMA, llama_block), (LINEAR, linear_block)):
        readme = folder / "README.md"
        try:
            files[readme] = with_generated_block(readme.read_text(), block(), SCRIPT)
        except ValueError as error:
            print(f"error: {readme}: {error}", file=sys.stderr)
            return 1
    return write_or_check(files, args.check)


if __name__ == "__main__":
    sys.exit(main())
