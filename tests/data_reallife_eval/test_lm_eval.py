"""The lm-eval task YAMLs, run offline through lm-eval's own HF model on the tiny LlamaCanon folder."""

import json
import os

import lm_eval
import torch
from lm_eval.tasks import TaskManager
from transformers import AutoModelForCausalLM, AutoTokenizer

import data_reallife_eval
from data_reallife_eval.babilong import DEFAULT_LENGTHS, TASKS, babilong_prompt
from data_reallife_eval.background import default_sentences
from data_reallife_eval.multihop import CONTEXTS, SETTINGS, MultihopBuilder, is_correct

TASK_DIR = os.path.join(os.path.dirname(data_reallife_eval.__file__), "lm_eval_tasks")


def test_every_setting_has_a_task():
    names = set(TaskManager(include_path=TASK_DIR, include_defaults=False).all_tasks)
    multihop = {f"multihop_{h}hop_{c}" for h in SETTINGS for c in CONTEXTS}
    babilong = {f"physicslm_babilong_{t}_{n}" for t in TASKS for n in DEFAULT_LENGTHS}
    assert multihop | babilong <= names
    assert {"multihop", "multihop_1hop", "multihop_2hop", "physicslm_babilong"} <= names  # tags


def test_simple_evaluate_offline_matches_the_package(model_dir, tmp_path):
    data = tmp_path / "babilong" / "0k"
    data.mkdir(parents=True)
    records = [
        {"input": "Mary went to the office.", "question": "Where is Mary?", "target": "office"},
        {"input": "John moved to the garden. Grass is green.", "question": "Where is John?", "target": "garden"},
    ]
    (data / "qa1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    model_args = {"pretrained": model_dir, "trust_remote_code": True, "device": "cpu"}
    manager = TaskManager(
        include_path=TASK_DIR,
        include_defaults=False,  # indexing lm-eval's own thousands of tasks is the slowest part otherwise
        metadata={**model_args, "num_samples": 3, "babilong_data": str(tmp_path / "babilong")},
    )
    tasks = ["multihop_2hop_0.5k", "physicslm_babilong_qa1_0k"]
    out = lm_eval.simple_evaluate(
        model="hf", model_args=model_args, tasks=tasks, task_manager=manager, limit=3, log_samples=True, batch_size=2
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()

    def greedy(prompt, max_new_tokens):  # what our runner does for one prompt: BOS (the tokenizer's own) + text
        ids = tokenizer(prompt).input_ids
        with torch.no_grad():
            new = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
        return tokenizer.decode(new[0, len(ids) :], skip_special_tokens=True).split("\n")[0]

    builder = MultihopBuilder(tokenizer, default_sentences(), seed=0)
    logged = out["samples"]["multihop_2hop_0.5k"]
    assert [s["doc"]["prompt"] for s in logged] == [builder.sample(2, "0.5k", i).prompt for i in range(3)]
    for s in logged:
        response = s["resps"][0][0]
        assert response == greedy(s["doc"]["prompt"], 8)
        assert s["exact_match"] == float(is_correct(s["doc"]["answer"], response))
    mean = sum(s["exact_match"] for s in logged) / 3
    assert out["results"]["multihop_2hop_0.5k"]["exact_match,none"] == mean

    logged = out["samples"]["physicslm_babilong_qa1_0k"]
    assert len(logged) == 2
    for s, record in zip(logged, records, strict=True):
        assert s["doc"]["prompt"] == babilong_prompt("qa1", record["input"], record["question"])
        assert s["resps"][0][0] == greedy(s["doc"]["prompt"], 20)
