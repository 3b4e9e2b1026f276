import os
import re
import subprocess
import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_module(*args):
    run = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_demo_newmodel_reports_the_1b_count_and_default_canon_init():
    out = run_module("huggingface.demo_newmodel")
    assert "LlamaCanon-1B: 1,366,460,416 parameters (1.366B), non-embedding 1,235,388,416" in out
    canon_stds = [float(s) for s in re.findall(r"canon[ABCD]\.weight .* std (\d\.\d+)", out)]
    assert len(canon_stds) == 4 and all(abs(s - 0.2887) < 0.01 for s in canon_stds)
    linear_stds = [float(s) for s in re.findall(r"proj\.weight .* std (\d\.\d+)", out)]
    assert len(linear_stds) == 7 and all(abs(s - 0.02) < 0.001 for s in linear_stds)


def tiny_tokenizer(vocab_size):
    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, vocab_size)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def test_demo_pretrained_generates_from_a_local_folder(tmp_path, make_model):
    model = make_model(canon_set="ABCD", rope_dim=4, eos_token_id=None)
    tokenizer = tiny_tokenizer(model.config.vocab_size)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompt = "w5 w17 w9 w33"
    out = run_module("huggingface.demo_pretrained", "--model", str(tmp_path), "--prompt", prompt,
                     "--max-new-tokens", "6", "--device", "cpu")  # fmt: skip
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :]
    assert out.strip() == prompt + tokenizer.decode(expected, skip_special_tokens=True)
