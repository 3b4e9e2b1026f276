"""The main job's driver (`make demo`), shrunk to a few steps: every artefact it promises is there and consistent."""

import json
import subprocess
import sys
from pathlib import Path

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"


def test_demo_writes_accuracy_logs_chart_summary_and_hf_export(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "apps.demo", "--out", str(out), "--steps", "20", "--train-samples", "800",
               "--test-samples", "24"]  # fmt: skip
    result = subprocess.run(command, cwd=LINGUA_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("Llama", "LlamaCanon"):
        lines = [json.loads(line) for line in (out / name / "metrics.eval.jsonl").read_text().splitlines()]
        assert [line["global_step"] for line in lines] == [20]
        assert 0.0 <= lines[0]["depo"]["acc,none"] <= 1.0
        config = (out / name / "config.yaml").read_text()
        assert ("canon_set: ABCD" in config) == (name == "LlamaCanon")
    assert (out / "LlamaCanon-hf" / "config.json").exists()
    html = (out / "chart.html").read_text()
    assert "Task: depo" in html and "<script src=" not in html  # self-contained
    summary = (out / "summary.md").read_text()
    assert "| 20 |" in summary and summary.count("- expected") == 3
    assert str(out / "chart.html") in result.stdout

    again = subprocess.run(command, cwd=LINGUA_ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr
