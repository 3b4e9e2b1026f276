"""The published training curves and result tables, as committed under canon_*_results/published/.

Written once by canon_llama_results/extract_published.py from the published chart pages and PDFs. Curves are
`(run, recipe, task, metric, tokens, value, source)` rows, one per plotted point: `run` is the published trace name
(e.g. `LlamaCanon-1.3B-Nemo-1.0T-lr0.003`), `recipe` the recipe of canon_*_recipes/ it was trained from
(`LlamaCanon-1B-Nemo-1T-lr0.003`), `tokens` the pretraining tokens at the point and `value` the accuracy (0..1) or,
for the task `training_loss`, the smoothed training loss.
"""

import csv
import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[3]
PUBLISHED_CURVES = {
    "llama": [REPOSITORY / "canon_llama_results" / "published" / "training_curves.csv.gz"],
    "linear": [
        REPOSITORY / "canon_linear_results" / "published" / "training_curves.csv.gz",
        REPOSITORY / "canon_linear_results" / "published" / "training_loss.csv.gz",
    ],
}
PUBLISHED_TABLES = {
    "llama": REPOSITORY / "canon_llama_results" / "published",
    "linear": REPOSITORY / "canon_linear_results" / "published",
}
LOSS_TASK = "training_loss"


@dataclass
class PublishedCurve:
    run: str
    recipe: str
    task: str
    metric: str
    source: str
    tokens: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    @property
    def is_canon(self) -> bool:
        return "Canon" in self.run


def read_csv(path: Path) -> list[dict]:
    """The rows of a published CSV, gzip-compressed (`.csv.gz`) or not."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def read_curves(which: str) -> list[PublishedCurve]:
    """Every published curve of `which` ("llama" or "linear"), in the order of the files: the task charts' traces
    figure by figure, then (linear) the training-loss traces."""
    if which not in PUBLISHED_CURVES:
        raise ValueError(f"published curves {which!r} do not exist; expected one of {sorted(PUBLISHED_CURVES)}")
    curves: dict[tuple[str, str], PublishedCurve] = {}
    for path in PUBLISHED_CURVES[which]:
        for row in read_csv(path):
            key = (row["run"], row["task"])
            if key not in curves:
                curves[key] = PublishedCurve(row["run"], row["recipe"], row["task"], row["metric"], row["source"])
            curves[key].tokens.append(int(row["tokens"]))
            curves[key].values.append(float(row["value"]))
    return list(curves.values())


def read_table(which: str, name: str) -> list[dict]:
    """The rows of one published result PDF, e.g. read_table("llama", "transformer_model-0")."""
    return read_csv(PUBLISHED_TABLES[which] / f"{name}.csv")
