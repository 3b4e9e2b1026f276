"""Hooks of the lm-eval task YAMLs in this folder: documents are built here, offline, from the package.

lm-eval calls `custom_dataset` with the task's `dataset_kwargs` plus its metadata, which holds the model arguments
(`pretrained=...`, or `tokenizer=...`) and anything passed with `--metadata '{...}'`:
  multihop: tokenizer (default: pretrained), trust_remote_code, num_samples (100), setting ("ours", or "paper" for
            the published sampling), seed (0), instruction (a text file replacing the 2+-hop instruction), names (a
            folder of first/middle/last name lists), background (JSONL file or HF dataset id; default: built-in
            filler), background_field (text), background_config, background_split (train);
  babilong: babilong_data (folder <length>/<task>.jsonl or HF dataset id; default: $BABILONG_DATA, else
            RMT-team/babilong), num_samples (all), prompts (a JSON/YAML prompt set; default: ours).
"""

import os
from functools import cache

import datasets

from data_reallife_eval import babilong, multihop
from data_reallife_eval.background import load_background
from data_reallife_eval.model import load_tokenizer


@cache
def _builder(tokenizer_name, trust_remote_code, seed, background, field, config, split, setting, instruction, names):
    tokenizer = load_tokenizer(tokenizer_name, trust_remote_code=trust_remote_code)
    if instruction is not None:
        with open(instruction, encoding="utf-8") as f:
            instruction = f.read()
    sentences = load_background(background, field, config, split)
    return multihop.MultihopBuilder(tokenizer, sentences, seed, setting, instruction, multihop.load_names(names))


def multihop_dataset(hops, context, people=None, **metadata):
    name = metadata.get("tokenizer") or metadata.get("pretrained")
    if not isinstance(name, str) or not name:
        raise ValueError(
            "the multihop tasks size their contexts with the model's tokenizer; pass --model_args pretrained=... "
            'or --metadata \'{"tokenizer": "NAME_OR_FOLDER"}\''
        )
    trust = str(metadata.get("trust_remote_code", False)).lower() in ("1", "true", "yes")
    builder = _builder(
        name,
        trust,
        int(metadata.get("seed", 0)),
        metadata.get("background"),
        metadata.get("background_field", "text"),
        metadata.get("background_config"),
        metadata.get("background_split", "train"),
        metadata.get("setting", "ours"),
        metadata.get("instruction"),
        metadata.get("names"),
    )
    num = int(metadata.get("num_samples", 100))
    people = None if people is None else int(people)
    docs = [sample.to_dict() for sample in builder.samples(int(hops), str(context), num, people)]
    return {"test": datasets.Dataset.from_list(docs)}


def process_multihop(doc, results):
    return {"exact_match": float(multihop.is_correct(doc["answer"], results[0]))}


def babilong_dataset(task, length, **metadata):
    data = metadata.get("babilong_data") or os.environ.get("BABILONG_DATA") or babilong.DEFAULT_DATA
    samples = babilong.load_babilong(task, length, data)[: metadata.get("num_samples")]
    prompts = babilong.load_prompts(metadata["prompts"]) if metadata.get("prompts") else None
    docs = [
        {**s, "task": task, "length": length,
         "prompt": babilong.babilong_prompt(task, s["input"], s["question"], prompts)}
        for s in samples
    ]  # fmt: skip
    return {"test": datasets.Dataset.from_list(docs)}


def process_babilong(doc, results):
    return {"acc": float(babilong.score(doc["task"], doc, results[0]))}
