"""Turn the reference's published charts and result tables into CSV files under canon_*_results/published/.

    python canon_llama_results/extract_published.py --reference PATH/TO/PhysicsLM4 [--check]

PATH/TO/PhysicsLM4 is a checkout of the reference repository. Read from it:

- the three interactive chart pages (every point of every trace becomes a row of `training_curves.csv.gz` or
  `training_loss.csv.gz`: run, recipe, task, metric, tokens, value, source; gzip-compressed because they hold
  170,000 rows, and written with a zero timestamp so the same rows give the same bytes);
- the result PDFs (transformer_model-0/-1, linear_model-0/-1 and their _best variants): every row becomes a row of
  `<pdf name>.csv`, with the row label split into size, tokens, context, model, variant and lr, and every cell
  kept as printed (percentages without the % sign).

The PDFs are read with poppler's `pdftotext -layout` (only this script needs it; the tests read the committed CSVs).
Nothing is rounded, corrected or re-derived: the numbers are what the reference published. `--check` rewrites
nothing and exits 1 when a committed CSV differs from what the reference gives now.
"""

import argparse
import csv
import gzip
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from atomic import write_atomic  # huggingface/atomic.py, linked beside this script

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "canon_llama_results"
LINEAR = ROOT / "canon_linear_results"

CURVE_COLUMNS = ["run", "recipe", "task", "metric", "tokens", "value", "source"]
LABEL_COLUMNS = ["run", "recipe", "size", "tokens", "context", "model", "variant", "lr"]

LM_EVAL = ["LMB", "PIQA", "Hella", "Wino", "ARC-e", "ARC-c", "SIQA", "BoolQ", "COPA", "OBQA", "RACE", "CSQA", "MMLU"]
JRT = ["FDA", "FDA2", "SWDE", "SWDE2", "NQ", "NQ2", "Squad", "Squad2", "TriviaQA", "TriviaQA2", "Drop", "Drop2"]
HOP_CONTEXTS = ["0k", "0.5k", "1k", "2k", "3k", "4k", "5k", "6k"]
BABILONG = [f"babilong-qa{qa}-{k}k" for qa in range(1, 6) for k in (0, 1, 2, 4)]
NIAH = [f"niah-S{s}-{k}" for s in (1, 2, 3) for k in ("0.5k", "2k", "4k", "5k", "6k", "7k", "8k")]
PERPLEXITIES = ["Wiki ppl", "LMB ppl"]  # the only cells printed without a % sign
# the value columns of the two pages every result PDF has, in the order the PDF prints them
PAGE_COLUMNS = {
    0: ["lm_eval(avg13)", *LM_EVAL, *PERPLEXITIES, "JRT(avg12)", *JRT]
    + [f"{hops}-hop-{k}" for hops in (1, 2) for k in HOP_CONTEXTS],
    1: ["Babilong(avg20)", *BABILONG, *NIAH],
}
PDFS = {
    LLAMA: ["transformer_model-0", "transformer_model-1", "transformer_model_best-0", "transformer_model_best-1"],
    LINEAR: ["linear_model-0", "linear_model-1", "linear_model_best-0", "linear_model_best-1"],
}
CHARTS = {  # (results folder, reference file) -> CSV written under <folder>/published/
    (LLAMA, "training-curves-interactive.html"): "training_curves.csv.gz",
    (LINEAR, "training-curves-interactive-linear.html"): "training_curves.csv.gz",
    (LINEAR, "training-loss-interactive-linear.html"): "training_loss.csv.gz",
}

ROW_LABEL = re.compile(
    r"^(?P<size>\d+(?:\.\d+)?B) \| (?P<tokens>\d+\.\d+T)\((?P<context>\d+)\) \| "
    r"(?P<model>\w+) - (?P<variant>[\w-]+) - lr(?P<lr>[\d.]+|\([\d.,]+\))",
    re.MULTILINE,
)
# a printed cell: digits.digits with an optional %; never part of a header word such as "1-hop-0.5k" or "1.0T(4096)"
CELL = re.compile(r"(?<![\w.\-])(\d+\.\d+)(%|(?![\w.(]))")
TASK_TITLE = re.compile(r"Task: (?P<task>\w+) \((?P<metric>\w+)\)")
LOSS_TITLE = re.compile(r"Training loss vs pretrain tokens \(moving average = (\d+)\)")
SIZE_OF_PARAMETERS = {"1.3B": "1B", "3.1B": "3B", "3B": "3B", "8.0B": "8B", "8B": "8B"}  # published size -> recipe's
LLAMA_VARIANTS = {"original": "Llama", "Canon-ABCD": "LlamaCanon"}
LINEAR_VARIANTS = {"conv": "conv", "Canon-AbCD": "Canon"}


class ExtractError(ValueError):
    """The reference file does not look as expected; extracting it would give wrong rows."""


def recipe_of_chart_run(name: str) -> str:
    """The recipe a chart trace belongs to: `LlamaCanon-1.3B-Nemo-1.0T-lr0.003` -> `LlamaCanon-1B-Nemo-1T-lr0.003`,
    `1.3B-GDN2CanonAbCD-Nemo-1.0T-lr0.002` -> `GDN2Canon-1B-Nemo-1T-lr0.002` (conv runs: `GDN2conv-...`)."""
    llama = re.fullmatch(r"(Llama|LlamaCanon)-([\d.]+B)-Nemo-([\d.]+)T-lr([\d.]+)", name)
    if llama:
        model, size, tokens, lr = llama.groups()
        return f"{model}-{SIZE_OF_PARAMETERS[size]}-Nemo-{float(tokens):g}T-lr{lr}"
    linear = re.fullmatch(r"([\d.]+B)-(GDN2|GLA5|Mamba2)(CanonAbCD|conv)-Nemo-([\d.]+)T-lr([\d.]+)", name)
    if linear:
        size, model, variant, tokens, lr = linear.groups()
        return f"{model}{variant.removesuffix('AbCD')}-{SIZE_OF_PARAMETERS[size]}-Nemo-{float(tokens):g}T-lr{lr}"
    raise ExtractError(
        f"chart trace {name!r} is not a run name the reference uses; expected e.g. Llama-1.3B-Nemo-1.0T-lr0.003"
    )


def recipe_of_table_row(label: dict) -> str:
    """The recipe of a PDF row; best-of-LR rows (lr printed as `(0.002,0.003)`) get the recipe name without `-lr`."""
    size, tokens = SIZE_OF_PARAMETERS[label["size"]], f"{float(label['tokens'].removesuffix('T')):g}T"
    if label["model"] == "Llama":
        stem = f"{LLAMA_VARIANTS[label['variant']]}-{size}-Nemo-{tokens}"
    else:
        stem = f"{label['model']}{LINEAR_VARIANTS[label['variant']]}-{size}-Nemo-{tokens}"
    return stem if label["lr"].startswith("(") else f"{stem}-lr{label['lr']}"


def chart_figures(page: str, source: str) -> list[tuple[list, dict]]:
    """(traces, layout) of every `newPlot(div, data, layout, config)` call of a chart page, decoded as JSON."""
    decoder = json.JSONDecoder()
    figures = []
    for match in re.finditer(r"newPlot\(\s*", page):
        position = match.end()
        values = []
        for _ in range(3):
            value, position = decoder.raw_decode(page, position)
            values.append(value)
            separator = re.compile(r"\s*,\s*").match(page, position)
            if separator is None:
                raise ExtractError(
                    f"{source}: a newPlot call at offset {match.start()} is not (div, data, layout, ...)"
                )
            position = separator.end()
        figures.append((values[1], values[2]))
    if not figures:
        raise ExtractError(f"{source} holds no Plotly figure; expected newPlot(...) calls")
    return figures


def curve_rows(page: str, source: str) -> list[list]:
    """One row per plotted point. Task pages: task and metric from the figure title (`Task: piqa (acc)`); the loss
    page: task `training_loss`, metric `loss_moving_average_50` (as its title says)."""
    rows = []
    for traces, layout in chart_figures(page, source):
        title = layout["title"]["text"]
        task = TASK_TITLE.fullmatch(title)
        if task:
            task_name, metric = task["task"], task["metric"]
        elif (
            window := re.fullmatch(r"Training loss vs pretrain tokens \(moving average = (\d+)\)", title)
        ) is not None:
            task_name, metric = "training_loss", f"loss_moving_average_{window[1]}"
        else:
            raise ExtractError(f"{source}: figure title {title!r} is neither a task nor the training loss")
        for trace in traces:
            if len(trace["x"]) != len(trace["y"]):
                raise ExtractError(f"{source}: trace {trace['name']!r} of {title!r} has {len(trace['x'])} x values "
                                   f"but {len(trace['y'])} y values")  # fmt: skip
            recipe = recipe_of_chart_run(trace["name"])
            for tokens, value in zip(trace["x"], trace["y"], strict=True):
                if not isinstance(tokens, int) or not isinstance(value, (int, float)):
                    raise ExtractError(f"{source}: trace {trace['name']!r} has point ({tokens!r}, {value!r}); "
                                       "expected (integer tokens, number)")  # fmt: skip
                rows.append([trace["name"], recipe, task_name, metric, tokens, repr(float(value)), source])
    return rows


def pdf_text(path: Path) -> str:
    if shutil.which("pdftotext") is None:
        raise ExtractError("pdftotext is not installed; expected poppler-utils (e.g. apt-get install poppler-utils)")
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def table_rows(text: str, page: int, source: str) -> list[list[str]]:
    """Every row of a result PDF: the split label, then the cells of the page's columns. A row's cells are the
    numbers between its label and the next (pdftotext may break a row around the footer); their count and which of
    them carry a % sign must match the page's columns exactly."""
    columns = PAGE_COLUMNS[page]
    labels = list(ROW_LABEL.finditer(text))
    if not labels:
        raise ExtractError(f"{source} has no row label such as '1.3B | 1.0T(4096) | Llama - original - lr0.003'")
    rows = []
    for label, following in zip(labels, [*labels[1:], None], strict=True):
        segment = text[label.end() : following.start() if following else len(text)]
        cells = CELL.findall(segment)
        percent = [c not in PERPLEXITIES for c in columns]
        found, expected = (
            "".join("%" if sign else "n" for sign in signs) for signs in ([s for _, s in cells], percent)
        )
        if found != expected:
            raise ExtractError(
                f"{source}: row {label.group(0)!r} has {len(cells)} cells ({found}); expected {len(columns)} "
                f"({expected}, % = a percentage, n = a perplexity)"
            )
        fields = label.groupdict()
        recipe = recipe_of_table_row(fields)
        fields["lr"] = fields["lr"].strip("()")
        rows.append(
            [label.group(0), recipe, *(fields[c] for c in LABEL_COLUMNS[2:]), *(value for value, _ in cells), source]
        )
    return rows


def read_text(path: Path) -> str:
    """A CSV file's text, gzip-compressed (`.csv.gz`) or not."""
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


def to_csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def extract(reference: Path) -> dict[Path, str]:
    """Every CSV this script writes, as {path: text}."""
    files = {}
    for (folder, name), csv_name in CHARTS.items():
        path = reference / folder.name / name
        if not path.is_file():
            raise ExtractError(f"{path} does not exist; expected a checkout of the reference repository")
        files[folder / "published" / csv_name] = to_csv(
            CURVE_COLUMNS, curve_rows(path.read_text(encoding="utf-8"), name)
        )
    for folder, names in PDFS.items():
        for name in names:
            path = reference / folder.name / f"{name}.pdf"
            if not path.is_file():
                raise ExtractError(f"{path} does not exist; expected a checkout of the reference repository")
            page = int(name[-1])
            rows = table_rows(pdf_text(path), page, path.name)
            files[folder / "published" / f"{name}.csv"] = to_csv([*LABEL_COLUMNS, *PAGE_COLUMNS[page], "source"], rows)
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, type=Path, help="a checkout of the reference repository")
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed CSV differs; write nothing")
    args = parser.parse_args(argv)
    try:
        files = extract(args.reference)
    except ExtractError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.check:
        differing = [p for p, text in files.items() if not p.is_file() or read_text(p) != text]
        for path in differing:
            print(f"{path} differs from what the reference gives", file=sys.stderr)
        return 1 if differing else 0
    for path, text in files.items():
        path.parent.mkdir(exist_ok=True)
        data = text.encode("utf-8")
        write_atomic(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
        print(f"wrote {path.relative_to(ROOT)} ({text.count(chr(10)) - 1} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
