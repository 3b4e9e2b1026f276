"""The lm-eval task YAMLs, run offline through lm-eval's own HF model on the tiny LlamaCanon folder."""

import json
import os

import lm_eval
import pytest
from lm_eval.tasks import TaskManager
from transformers import AutoModelForCausalLM, AutoTokenizer

import data_reallife_eval
from data_reallife_eval.babilong import DEFAULT_LENGTHS, TASKS, babilong_prompt, load_prompts
from data_reallife_eval.background import default_sentences
from data_reallife_eval.evaluate import babilong_items, multihop_items, run_items
from data_reallife_eval.multihop import CONTEXTS, PEOPLE, MultihopBuilder, Task, is_correct

TASK_DIR = os.path.join(os.path.dirname(data_reallife_eval.__file__), "lm_eval_tasks")


def test_every_setting_has_a_task():
    names = set(TaskManager(include_path=TASK_DIR, include_defaults=False).all_tasks)
    multihop = {f"multihop_{h}hop_{c}" for h in PEOPLE for c in CONTEXTS}
    babilong = {f"physicslm_babilong_{t}_{n}" for t in TASKS for n in DEFAULT_LENGTHS}
    assert multihop | babilong <= names
    assert {"multihop", "multihop_1hop", "multihop_2hop", "physicslm_babilong"} <= names  # tags


@pytest.mark.parametrize("setting", ["ours", "paper"])
def test_simple_evaluate_offline_matches_the_runner(model_dir, tmp_path, setting):
    """One lm-eval run and our runner (the command line's code path) give the same prompts and the same outputs,
    sample by sample, in both multi-hop settings and with a prompt-set file for BABILong."""
    data = tmp_path / "babilong" / "0k"
    data.mkdir(parents=True)
    records = [
        {"input": "Mary went to the office.", "question": "Where is Mary?", "target": "office"},
        {"input": "John moved to the garden. Grass is green.", "question": "Where is John?", "target": "garden"},
    ]
    (data / "qa1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(json.dumps({"qa1": {"instruction": "Say where.", "examples": "Q: x? A: den."}}))
    prompts = load_prompts(str(prompt_file)) if setting == "paper" else None
    model_args = {"pretrained": model_dir, "trust_remote_code": True, "device": "cpu"}
    metadata = {**model_args, "num_samples": 3, "babilong_data": str(tmp_path / "babilong"), "setting": setting}
    if prompts:
        metadata["prompts"] = str(prompt_file)
    manager = TaskManager(
        include_path=TASK_DIR,
        include_defaults=False,  # indexing lm-eval's own thousands of tasks is the slowest part otherwise
        metadata=metadata,
    )
    tasks = ["multihop_2hop_0.5k", "physicslm_babilong_qa1_0k"]
    out = lm_eval.simple_evaluate(
        model="hf", model_args=model_args, tasks=tasks, task_manager=manager, limit=3, log_samples=True, batch_size=2
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    builder = MultihopBuilder(tokenizer, default_sentences(), seed=0, setting=setting)
    ours = multihop_items(builder, [Task(3, 2)], ["0.5k"], 3)
    _, runner = run_items(model, tokenizer, ours, 8, batch_size=2, add_bos=True, desc="multihop")
    logged = out["samples"]["multihop_2hop_0.5k"]
    assert [s["doc"]["prompt"] for s in logged] == [item.prompt for item in ours]
    for s, mine in zip(logged, runner, strict=True):
        # lm-eval stops at the first newline (the task's `until`); our runner keeps the whole continuation
        assert s["resps"][0][0] == mine["output"].split("\n")[0]
        assert s["exact_match"] == float(is_correct(s["doc"]["answer"], s["resps"][0][0])) == float(mine["correct"])
    mean = sum(s["exact_match"] for s in logged) / 3
    assert out["results"]["multihop_2hop_0.5k"]["exact_match,none"] == mean

    ours = babilong_items({("qa1", "0k"): records}, None, prompts)
    _, runner = run_items(model, tokenizer, ours, 20, batch_size=2, add_bos=True, desc="babilong")
    logged = out["samples"]["physicslm_babilong_qa1_0k"]
    assert len(logged) == 2
    for s, record, item, mine in zip(logged, records, ours, runner, strict=True):
        assert s["doc"]["prompt"] == item.prompt == babilong_prompt("qa1", record["input"], record["question"], prompts)
        assert s["resps"][0][0] == mine["output"].split("\n")[0]
