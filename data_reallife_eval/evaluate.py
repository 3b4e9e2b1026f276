"""Running a model on prompts, scoring, and the result table / JSON shared by both tasks."""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from data_synthetic_pretrain.atomic import atomic_output

from . import babilong, multihop
from .model import encode_prompt, greedy_generate


@dataclass
class Item:
    """One prompt to answer: it is counted in cell (row, column) of the result table."""

    row: str
    column: str
    prompt: str
    score: Callable[[str], bool]  # the model's decoded continuation -> correct?
    record: dict = field(default_factory=dict)  # what the JSON keeps about this sample (never the long prompt)


def run_items(model, tokenizer, items: list[Item], max_new_tokens: int, batch_size: int, add_bos: bool, desc: str):
    """Greedy-decode every item, score it; returns ({row: {column: {accuracy, correct, total}}}, per-sample logs)."""
    prompts = [encode_prompt(tokenizer, item.prompt, add_bos) for item in items]
    pad = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    outputs = greedy_generate(model, prompts, max_new_tokens, batch_size, pad, desc=desc)
    results: dict[str, dict[str, dict]] = {}
    samples = []
    for item, ids, output in zip(items, prompts, outputs, strict=True):
        text = tokenizer.decode(output, skip_special_tokens=True)
        correct = item.score(text)
        cell = results.setdefault(item.row, {}).setdefault(item.column, {"accuracy": 0.0, "correct": 0, "total": 0})
        cell["correct"] += int(correct)
        cell["total"] += 1
        cell["accuracy"] = cell["correct"] / cell["total"]
        samples.append({**item.record, "prompt_tokens": len(ids), "output": text, "correct": correct})
    return results, samples


def multihop_items(builder: multihop.MultihopBuilder, tasks: list, contexts: list[str], num: int) -> list[Item]:
    """One item per sample of every (task, context) cell; `tasks` are multihop.Task (N, k)."""
    items = []
    for task in tasks:
        for context in contexts:
            for sample in builder.samples(task.hops, context, num, task.people):
                record = {k: v for k, v in sample.to_dict().items() if k != "prompt"}
                score = lambda text, answer=sample.answer: multihop.is_correct(answer, text)
                items.append(Item(task.label, context, sample.prompt, score, record))
    return items


def babilong_items(data: dict[tuple[str, str], list[dict]], num: int | None, prompts: dict | None = None) -> list[Item]:
    """`data` maps (task, length) to its samples; the first `num` of each are used (all when None). `prompts`: a
    prompt set (babilong.load_prompts), default ours."""
    items = []
    for (task, length), samples in data.items():
        for index, sample in enumerate(samples[:num]):
            prompt = babilong.babilong_prompt(task, sample["input"], sample["question"], prompts)
            score = lambda text, task=task, sample=sample: babilong.score(task, sample, text)
            record = {"task": task, "length": length, "index": index, "question": sample["question"]}
            items.append(Item(task, length, prompt, score, {**record, "target": sample["target"]}))
    return items


def format_table(results: dict, rows: list[str], columns: list[str]) -> str:
    """Accuracy in percent, one row per hop count (or task), one column per context length."""
    width = max(6, *(len(c) for c in columns))
    first = max(len(r) for r in rows)
    lines = [" " * first + "".join(f"  {c:>{width}}" for c in columns)]
    for row in rows:
        cells = "".join(f"  {100 * results[row][c]['accuracy']:>{width}.1f}" for c in columns)
        lines.append(f"{row:<{first}}{cells}")
    return "\n".join(lines)


def check_out(path: str) -> None:
    """Refuse an existing output file and an output folder that does not exist, before any work."""
    if os.path.exists(path):
        raise ValueError(f"output {path!r} already exists; choose another --out (results are never overwritten)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"the folder of output {path!r} does not exist")


def write_json(path: str, payload: dict) -> None:
    """Write atomically (a crash leaves no half-written file); a file that appeared at `path` during the run is
    kept."""
    with atomic_output(path) as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
