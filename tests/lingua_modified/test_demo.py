"""The main job's driver (`make demo`), shrunk to a few steps: every artefact it promises is there and its numbers are
right (accuracy recomputed from the checkpoints, the summary table, the Hugging Face export's logits and greedy
answers); answer_accuracy and answer_spans on inputs whose answer is known."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from apps.demo.accuracy import answer_accuracy, answer_spans
from apps.main.generate import load_consolidated_model_and_tokenizer

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
STEPS = 20


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    command = [sys.executable, "-m", "apps.demo", "--out", str(out), "--steps", str(STEPS), "--train-samples", "800",
               "--test-samples", "24"]  # fmt: skip
    result = subprocess.run(command, cwd=LINGUA_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, command, result


def eval_lines(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / name / "metrics.eval.jsonl").read_text().splitlines()]


def test_demo_writes_accuracy_logs_chart_summary_and_hf_export(demo):
    out, command, result = demo
    for name in ("Llama", "LlamaCanon"):
        assert [line["global_step"] for line in eval_lines(out, name)] == [STEPS]
        config = (out / name / "config.yaml").read_text()
        assert ("canon_set: ABCD" in config) == (name == "LlamaCanon")
    assert (out / "LlamaCanon-hf" / "config.json").exists()
    html = (out / "chart.html").read_text()
    assert "Task: depo" in html and "<script src=" not in html  # self-contained
    assert str(out / "chart.html") in result.stdout

    again = subprocess.run(command, cwd=LINGUA_ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_logged_accuracy_is_the_checkpoints_and_the_summary_table_is_the_log(demo):
    out, _, _ = demo
    [test_file] = (out / "test").glob("*.jsonl")
    records = [json.loads(line) for line in test_file.read_text().splitlines()]
    table = {}
    for row in re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \|$", (out / "summary.md").read_text(), re.M):
        table[int(row[0])] = {"Llama": row[1], "LlamaCanon": row[2]}
    assert sorted(table) == [STEPS]
    for name in ("Llama", "LlamaCanon"):
        for line in eval_lines(out, name):
            step, logged = line["global_step"], line["depo"]["acc,none"]
            model, _ = load_consolidated_model_and_tokenizer(
                out / name / "checkpoints" / f"{step:010d}" / "consolidated"
            )
            assert logged == one_record_at_a_time_accuracy(model, records)
            assert table[step][name] == f"{logged:.3f}"


@torch.no_grad()
def one_record_at_a_time_accuracy(model, records) -> float:
    """The demo's accuracy, computed independently: each answer from its own forward over its true prefix."""
    correct = total = 0
    for record in records:
        tokens = torch.tensor(record["tokens"])
        for start, end in answer_spans(record["labels"]):
            predicted = model(tokens[None, : end - 1])[0].argmax(-1)
            correct += bool((predicted[start - 1 :] == tokens[start:end]).all())
            total += 1
    return correct / total


@torch.no_grad()
def test_the_hf_export_has_the_lingua_logits_and_greedy_answers_of_a_cache_free_loop(demo):
    from transformers import AutoModelForCausalLM

    out, _, _ = demo
    hf = AutoModelForCausalLM.from_pretrained(out / "LlamaCanon-hf", trust_remote_code=True).eval()
    lingua, _ = load_consolidated_model_and_tokenizer(
        out / "LlamaCanon" / "checkpoints" / f"{STEPS:010d}" / "consolidated"
    )
    [test_file] = (out / "test").glob("*.jsonl")
    tokens = torch.tensor([json.loads(line)["tokens"][:64] for line in test_file.read_text().splitlines()[:4]])
    torch.testing.assert_close(hf(tokens).logits, lingua(tokens), rtol=1e-5, atol=1e-5)

    examples = json.loads((out / "hf_generations.json").read_text())
    summary = (out / "summary.md").read_text()
    assert len(examples) == 3
    for example in examples:
        sequence = list(example["prompt_dense"])
        for _ in example["generated_dense"]:  # greedy without a cache: argmax of a full forward, token by token
            sequence.append(int(hf(torch.tensor([sequence])).logits[0, -1].argmax()))
        assert sequence[len(example["prompt_dense"]) :] == example["generated_dense"]
        assert f"- expected {example['expected']}, generated {example['generated']}" in summary


class Oracle(nn.Module):
    """Logits that put all weight on the input shifted by `shift`: shift 1 is the true next token (a perfect
    predictor), shift 0 repeats the current token."""

    def __init__(self, shift: int, vocab: int = 16):
        super().__init__()
        self.shift, self.vocab = shift, vocab

    def forward(self, tokens):
        guess = torch.roll(tokens, -self.shift, dims=1)
        return nn.functional.one_hot(guess, self.vocab).float()


def test_answer_accuracy_scores_a_perfect_predictor_1_and_a_shifted_one_0():
    records = [
        {"tokens": [1, 2, 3, 4, 5, 6], "labels": [0, 0, 1, 1, 0, 1]},  # two answers
        {"tokens": [7, 8, 9, 10], "labels": [0, 0, 0, 1]},  # shorter than the batch: right-padded
        {"tokens": [11, 12, 13], "labels": [0, 1, 1]},
    ]
    assert answer_accuracy(Oracle(1), records) == 1.0
    assert answer_accuracy(Oracle(0), records) == 0.0
    assert answer_accuracy(Oracle(1), records, batch_size=1) == 1.0
    # repeating the current token is right exactly where an answer repeats its predecessor: one answer of two
    mixed = [{"tokens": [1, 2, 2], "labels": [0, 0, 1]}, {"tokens": [1, 2, 3], "labels": [0, 0, 1]}]
    assert answer_accuracy(Oracle(0), mixed) == 0.5
    # an answer counts only when every one of its tokens is right
    assert answer_accuracy(Oracle(0), [{"tokens": [1, 2, 2, 3], "labels": [0, 0, 1, 1]}]) == 0.0
    with pytest.raises(ValueError, match="record 0: an answer starts at the first token"):
        answer_accuracy(Oracle(1), [{"tokens": [1, 2], "labels": [1, 0]}])
    with pytest.raises(ValueError, match="no answers to score"):
        answer_accuracy(Oracle(1), [{"tokens": [1, 2], "labels": [0, 0]}])


def test_answer_spans_are_the_maximal_runs_of_ones():
    assert answer_spans([0, 1, 1, 0, 1]) == [(1, 3), (4, 5)]
    assert answer_spans([1, 1, 0, 0]) == [(0, 2)]
    assert answer_spans([0, 0]) == [] and answer_spans([]) == []
    assert answer_spans([0, 1, 0, 1, 1, 1]) == [(1, 2), (3, 6)]


def test_the_console_shows_a_progress_bar_per_training_run_and_per_evaluation(demo):
    _, _, result = demo
    for name in ("Llama", "LlamaCanon"):  # step count, elapsed<remaining, and the loss the trainer logged
        assert re.search(rf"{name}: 100%\|[^|]*\| {STEPS}/{STEPS} \[[\d:]+<[\d:]+, [^]]*loss=\d", result.stderr)
        assert f"eval {name}: 100%" in result.stderr
    assert "HF generate: 100%" in result.stderr
    assert f"the trainers' output is in {demo[0] / 'Llama.log'}" in result.stdout


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread is as fast on an idle machine and many times faster on a busy one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def test_the_hf_count_is_the_logged_accuracy_also_where_answers_are_right(demo, one_thread):
    """The summary's count equals the log; and on queries whose expected answers are partly the export's own greedy
    answers (so that many are right), the two ways of counting still agree answer by answer."""
    from transformers import AutoModelForCausalLM

    from apps.demo.accuracy import greedy_answers, queries

    out, _, _ = demo
    [test_file] = (out / "test").glob("*.jsonl")
    prompts = queries([json.loads(line) for line in test_file.read_text().splitlines()])
    correct, total = map(
        int, re.search(r"HF export answers (\d+) / (\d+) right", (out / "summary.md").read_text()).groups()
    )
    assert total == len(prompts) and correct / total == eval_lines(out, "LlamaCanon")[-1]["depo"]["acc,none"]

    hf = AutoModelForCausalLM.from_pretrained(out / "LlamaCanon-hf", trust_remote_code=True).eval()
    prompts = prompts[:64]  # one batch
    own = greedy_answers(hf, prompts)
    mixed = [(prefix, own[i] if i % 2 else answer) for i, (prefix, answer) in enumerate(prompts)]
    right = [got == answer for got, (_, answer) in zip(greedy_answers(hf, mixed), mixed, strict=True)]
    assert sum(right) >= len(mixed) // 2
    lingua, _ = load_consolidated_model_and_tokenizer(
        out / "LlamaCanon" / "checkpoints" / f"{STEPS:010d}" / "consolidated"
    )
    records = [{"tokens": p + a, "labels": [0] * len(p) + [1] * len(a)} for p, a in mixed]
    assert [answer_accuracy(lingua, [record]) for record in records] == list(map(float, right))
