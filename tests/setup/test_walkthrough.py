"""canon_llama_recipes/README.md's walkthrough, run as written from an empty folder: corpus, data preparation, a
recipe with the CPU overlay, evaluation of its checkpoint, and the chart with the run over the published curve of its
recipe. Offline: the evaluation's PIQA comes from a local stand-in task of the same name."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
README = LINGUA_ROOT.parent / "canon_llama_recipes" / "README.md"
PIQA_STAND_IN = """task: piqa
dataset_path: json
dataset_kwargs: {{data_files: {{validation: {path}}}}}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Question: {{{{goal}}}}\\nAnswer:"
doc_to_choice: "{{{{[sol1, sol2]}}}}"
doc_to_target: label
metric_list: [{{metric: acc}}, {{metric: acc_norm}}]
"""


def walkthrough_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- walkthrough: run by tests/setup/test_walkthrough.py -->\n```bash\n(.*?)```", text, re.S)
    assert block, "the README lost its walkthrough block"
    lines = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    assert lines[0] == "cd lingua_modified"
    return lines[1:]


def test_the_readme_walkthrough_runs_from_an_empty_folder_to_the_chart(tmp_path):
    work = tmp_path / "work"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    docs = [{"goal": f"To open jar {i},", "sol1": "twist the lid.", "sol2": "eat the lid.", "label": i % 2}
            for i in range(8)]  # fmt: skip
    (tasks / "piqa.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "piqa.yaml").write_text(PIQA_STAND_IN.format(path=tasks / "piqa.jsonl"))
    env = dict(
        os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"
    )
    commands = walkthrough_commands()
    assert [command.split()[1] for command in commands] == [
        "-c", "setup/download_prepare_hf_data.py", "-m", "-m", "-m"
    ]  # fmt: skip
    checkpoint = work / "runs" / "tiny" / "checkpoints" / "0000000020"
    for command in commands:
        argv = shlex.split(command.replace("../work", str(work)))
        argv[0] = sys.executable
        if "apps.main.eval" in argv:
            argv += [f"harness.include_path={tasks}", "harness.include_defaults=false", "harness.bootstrap_iters=0"]
            # the evaluation starts from the trainer's sharded (DCP) checkpoint and consolidates it itself
            assert (checkpoint / ".metadata").is_file() and not (checkpoint / "consolidated").exists()
        result = subprocess.run(argv, cwd=LINGUA_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr[-3000:])

    assert sorted(p.name for p in (work / "data" / "original_shuffled").iterdir()) == [
        "corpus.chunk.00.jsonl", "corpus.val.jsonl"
    ]  # fmt: skip
    steps = [json.loads(x)["global_step"] for x in (work / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))  # the recipe with the overlay trained its 20 steps on the prepared corpus
    assert (checkpoint / "consolidated" / "consolidated.pth").is_file()
    (line,) = [json.loads(x) for x in (work / "runs" / "tiny" / "metrics.eval.jsonl").read_text().splitlines()]
    assert line["global_step"] == 20 and 0 <= line["piqa"]["acc,none"] <= 1
    page = (work / "mine.html").read_text(encoding="utf-8")
    start = page.index("Plotly.newPlot(", page.index('"task-piqa"') - 200)
    traces = json.JSONDecoder().raw_decode(page, page.index("[", start))[0]
    (mine,) = [t for t in traces if t["name"].endswith("(yours)")]
    (theirs,) = [t for t in traces if t["name"] == "LlamaCanon-1.3B-Nemo-1.0T-lr0.003"]
    assert mine["y"] == [line["piqa"]["acc,none"]] and mine["x"] == [20 * 4 * 128]  # 20 steps of 4 x 128 tokens
    assert mine["line"]["color"] == theirs["line"]["color"] and mine["legendgroup"] == theirs["legendgroup"]
