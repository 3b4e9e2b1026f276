"""apps.main.eval: the lm-eval adapter (continuation slice, rolling log-likelihood, generate_until), lm-eval's own
simple_evaluate on local tasks against the same checkpoint exported to Hugging Face, validation NLL, the result files,
and in-process evaluation during training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from apps.main.eval import EvalArgs, EvalHarnessLM, LMHarnessArgs, ValidationArgs, launch_eval, main
from apps.main.generate import LeftPaddedGenerator as PackedCausalTransformerGenerator
from apps.main.generate import LeftPaddedGeneratorArgs as PackedCausalTransformerGeneratorArgs
from apps.main.generate import load_consolidated_model_and_tokenizer
from apps.main.train import main as train_main
from huggingface.convert_lingua_to_hf import convert_lingua_to_hf
from lingua.args import dataclass_to_dict

LINGUA_ROOT = Path(__file__).resolve().parents[2] / "lingua_modified"
DEBUG_YAML = LINGUA_ROOT / "apps" / "main" / "configs" / "debug.yaml"
FP32_CPU = PackedCausalTransformerGeneratorArgs(dtype="fp32", device="cpu", max_gen_len=8)

MC_DOCS = [
    {"question": "The sky is", "choices": ["blue", "green", "loud"], "answer": 0},
    {"question": "Two plus two is", "choices": ["four", "five"], "answer": 0},
    {"question": "Cats say", "choices": ["woof", "meow", "moo"], "answer": 1},
    {"question": "Ice is", "choices": ["hot", "cold"], "answer": 1},
    {"question": "The letter after A is", "choices": ["C", "B", "Z"], "answer": 1},
]
GEN_DOCS = [{"question": q, "answer": a} for q, a in [("Say hi:", "hi"), ("Q: 1+1=", "2"), ("Name:", "Bob")]]
TASKS = {
    "tiny_mc": """task: tiny_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {path}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: choices
doc_to_target: answer
metric_list: [{{metric: acc}}]
""",
    "tiny_gen": """task: tiny_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {path}}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: answer
generation_kwargs: {{until: ["."], max_gen_toks: 6, do_sample: false}}
metric_list: [{{metric: exact_match}}]
""",
}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    for name, docs in (("tiny_mc", MC_DOCS), ("tiny_gen", GEN_DOCS)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        (folder / f"{name}.yaml").write_text(TASKS[name].format(path=folder / f"{name}.jsonl"))
    return folder


def harness_args(task_dir, tasks=("tiny_mc", "tiny_gen")):
    return LMHarnessArgs(tasks=list(tasks), include_path=str(task_dir), include_defaults=False, bootstrap_iters=0)


def adapter_for(folder, **fields):
    model, tokenizer = load_consolidated_model_and_tokenizer(folder)
    cfg = PackedCausalTransformerGeneratorArgs(**{**dataclass_to_dict(FP32_CPU), **fields})
    return EvalHarnessLM(PackedCausalTransformerGenerator(cfg, model, tokenizer)), model


def logprobs_of(model, ids):
    """log p(ids[i+1] | ids[:i+1]) by one full forward."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    return -F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")


def request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


# ----------------------------------------------------------------------------------------------------------------
# The adapter
# ----------------------------------------------------------------------------------------------------------------


def test_loglikelihood_scores_exactly_the_continuation_even_a_single_token(lingua_checkpoint):
    lm, model = adapter_for(lingua_checkpoint())
    context = "Question: which letter? Answer:"
    ids = list(context.encode())
    for continuation in ("A", " B", " is C"):
        [(logprob, greedy)] = lm.loglikelihood([request("loglikelihood", context, continuation)])
        whole = ids + list(continuation.encode())
        expected = logprobs_of(model, whole)[len(ids) - 1 :]  # the positions that predict the continuation
        assert logprob == pytest.approx(expected.sum().item(), abs=1e-4)
        assert logprob < 0  # a one-token continuation is scored too, not counted as 0 (log-probability 1)
        with torch.no_grad():
            argmax = model(torch.tensor([whole[:-1]]))[0, len(ids) - 1 :].argmax(-1)
        assert greedy == bool((argmax == torch.tensor(whole[len(ids) :])).all())
    [(from_empty, _)] = lm.loglikelihood([request("loglikelihood", "", "hi")])
    assert from_empty == pytest.approx(logprobs_of(model, [256, *b"hi"]).sum().item(), abs=1e-4)  # BOS as context


def test_loglikelihood_rolling_covers_every_token_in_windows(lingua_checkpoint):
    lm, model = adapter_for(lingua_checkpoint())  # max_seqlen 48
    short = "a short text"
    [total] = lm.loglikelihood_rolling([request("loglikelihood_rolling", short)])
    assert total == pytest.approx(logprobs_of(model, [256, *short.encode()]).sum().item(), abs=1e-4)
    long = "".join(chr(97 + i % 26) for i in range(100))  # 100 tokens: windows of at most 48 predictions
    [total] = lm.loglikelihood_rolling([request("loglikelihood_rolling", long)])
    ids = list(long.encode())
    expected = logprobs_of(model, [256, *ids[:48]]).sum()  # BOS + 47 tokens predict the first 48
    expected += logprobs_of(model, ids[47:96]).sum()  # one token of context, the next 48
    expected += logprobs_of(model, ids[51:100])[-4:].sum()  # the last 4, after as much context as fits
    assert total == pytest.approx(expected.item(), abs=1e-3)


def test_generate_until_honours_max_gen_toks_and_cuts_at_the_stop_string(lingua_checkpoint):
    lm, _ = adapter_for(lingua_checkpoint(), max_gen_len=30)
    generator = lm.generator
    free = generator.generate(["The cat"], until=[])[0]
    stop = next(c for c in free[2:] if c.isprintable() and c not in free[:2])
    [cut] = lm.generate_until([request("generate_until", "The cat", {"until": [stop], "max_gen_toks": 30})])
    assert cut == free[: free.index(stop)] and stop not in cut
    [short] = lm.generate_until([request("generate_until", "The cat", {"until": [], "max_gen_toks": 3})])
    assert short == free[:3]
    [text] = lm.generate_until([request("generate_until", "The cat", {"until": "\x00", "do_sample": False})])
    assert text == free  # max_gen_toks unset: the generator's max_gen_len


# ----------------------------------------------------------------------------------------------------------------
# lm-eval end to end, against lm-eval's HF model on the exported checkpoint
# ----------------------------------------------------------------------------------------------------------------


def save_hf_byte_tokenizer(folder):
    """The bytes tokenizer as a Hugging Face tokenizer: byte b is id b, <bos> 256, <eos> 257, no BOS added."""
    vocab = {char: byte for byte, char in bytes_to_unicode().items()} | {"<bos>": 256, "<eos>": 257}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>").save_pretrained(folder)


def test_simple_evaluate_matches_lm_evals_hf_model_on_the_exported_checkpoint(lingua_checkpoint, task_dir, tmp_path):
    folder = lingua_checkpoint()
    cfg = EvalArgs(
        dump_dir=str(tmp_path / "eval"),
        metric_log_dir=str(tmp_path / "run"),
        ckpt_dir=str(folder.parent),  # the step folder: its consolidated/ is found
        generator=FP32_CPU,
        harness=harness_args(task_dir),
        validation=None,
    )
    ours = launch_eval(cfg)["harness"]

    hf_dir = tmp_path / "hf"
    convert_lingua_to_hf(str(folder), str(hf_dir))
    save_hf_byte_tokenizer(hf_dir)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    model_args = {"pretrained": str(hf_dir), "trust_remote_code": True, "device": "cpu", "dtype": "float32"}
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=model_args, tasks=["tiny_mc", "tiny_gen"], task_manager=manager, bootstrap_iters=0
    )

    assert ours["results"]["tiny_mc"]["acc,none"] == theirs["results"]["tiny_mc"]["acc,none"]
    assert ours["results"]["tiny_gen"]["exact_match,none"] == theirs["results"]["tiny_gen"]["exact_match,none"]
    for a, b in zip(ours["samples"]["tiny_mc"], theirs["samples"]["tiny_mc"], strict=True):
        assert a["arguments"] == b["arguments"]
        for (ll_a, greedy_a), (ll_b, greedy_b) in zip(a["filtered_resps"], b["filtered_resps"], strict=True):
            assert ll_a == pytest.approx(ll_b, abs=1e-3) and greedy_a == greedy_b and ll_a < 0
    assert [s["filtered_resps"] for s in ours["samples"]["tiny_gen"]] == [
        s["filtered_resps"] for s in theirs["samples"]["tiny_gen"]
    ]

    # the files: results.json (lm-eval's output) and one metrics.eval.jsonl line (contract 4)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["results"]["tiny_mc"]["acc,none"] == ours["results"]["tiny_mc"]["acc,none"]
    [line] = [json.loads(x) for x in (tmp_path / "run" / "metrics.eval.jsonl").read_text().splitlines()]
    assert line["global_step"] == 10 and line["created_at"].endswith("+00:00")
    assert line["tiny_mc"]["acc,none"] == ours["results"]["tiny_mc"]["acc,none"]
    assert list(line)[:2] == ["created_at", "global_step"]
    with pytest.raises(FileExistsError, match="already holds results.json"):
        launch_eval(cfg)  # never overwrites earlier results


def test_unknown_task_is_one_clear_error_before_anything_is_written(lingua_checkpoint, task_dir, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(f"ckpt_dir: {lingua_checkpoint()}\ndump_dir: {tmp_path / 'out'}\nvalidation: null\n"
                      f"harness: {{tasks: [tiny_mc, tiny_mcq], include_path: {task_dir}, include_defaults: false}}\n"
                      "generator: {dtype: fp32, device: cpu}\n")  # fmt: skip
    assert main([f"config={config}"]) == 1
    assert "unknown lm-eval task 'tiny_mcq'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([f"config={config}", "harness.taskz=[tiny_mc]"]) == 1
    assert "unknown config key 'harness.taskz'; did you mean 'harness.tasks'?" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Validation NLL
# ----------------------------------------------------------------------------------------------------------------


def test_validation_nll_is_the_token_weighted_nll_of_the_held_out_documents(lingua_checkpoint, tmp_path):
    folder = lingua_checkpoint()
    texts = ["alpha beta gamma.", "x" * 70, "the end"]  # the 72-token document spans two windows of 48
    source = tmp_path / "val" / "heldout"
    source.mkdir(parents=True)
    (source / "heldout.val.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (source / "tokens.val.jsonl").write_text(json.dumps({"tokens": [256, 104, 105, 257], "labels": [0, 0, 1, 1]}))
    cfg = EvalArgs(
        dump_dir=str(tmp_path / "eval"),
        metric_log_dir=str(tmp_path / "run"),
        ckpt_dir=str(folder),
        generator=FP32_CPU,
        harness=None,
        validation=ValidationArgs(root_dir=str(tmp_path / "val"), sources=["heldout"]),
    )
    result = launch_eval(cfg)["validation"]["heldout"]

    model, _ = load_consolidated_model_and_tokenizer(folder)
    nll = tokens = 0.0
    for text in texts:  # BOS + bytes + EOS as training reads them; windows of 48 predictions
        ids = [256, *text.encode(), 257]
        for start in range(0, len(ids) - 1, 48):
            piece = ids[start : start + 49]
            nll -= logprobs_of(model, piece).sum().item()
            tokens += len(piece) - 1
    labelled = -logprobs_of(model, [256, 104, 105, 257])[1:].sum().item()  # only labels 1: targets 105 and 257
    assert result["n_documents"] == 4 and result["n_tokens"] == tokens + 2
    assert result["nll_per_token"] == pytest.approx((nll + labelled) / (tokens + 2), rel=1e-5)
    assert result["nll"] == pytest.approx((nll + labelled) / 4, rel=1e-5) and result["nll"] > 0
    assert "nll_per_char" not in result  # one document is tokens, not text
    saved = json.loads((tmp_path / "eval" / "validation.json").read_text())
    assert saved["heldout"] == result
    [line] = [json.loads(x) for x in (tmp_path / "run" / "metrics.validation.jsonl").read_text().splitlines()]
    assert line["heldout"] == result and line["global_step"] == 10


# ----------------------------------------------------------------------------------------------------------------
# During training
# ----------------------------------------------------------------------------------------------------------------


def test_training_evaluates_each_eval_checkpoint_and_the_final_one_in_step_order(data, task_dir, capsys):
    """eval every 3 steps of 7: evaluations at 3, 6 and at the final step 7, each of the checkpoint just saved."""
    (data / "data" / "debug" / "debug.val.jsonl").write_text(json.dumps({"text": "alpha alpha alpha."}) + "\n")
    dump = data / "run"
    overrides = [
        "steps=7", "checkpoint.dump.every=3", "checkpoint.eval.every=3", "model.n_layers=1", "model.dim=32",
        "eval.harness.tasks=[tiny_mc]", f"eval.harness.include_path={task_dir}", "eval.harness.include_defaults=false",
        "eval.harness.bootstrap_iters=0", "eval.generator.dtype=fp32", "eval.generator.device=cpu",
    ]  # fmt: skip
    arguments = [f"config={DEBUG_YAML}", f"dump_dir={dump}", f"data.root_dir={data / 'data'}", *overrides]
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "apps.main.train", *arguments], cwd=LINGUA_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    lines = [json.loads(x) for x in (dump / "metrics.eval.jsonl").read_text().splitlines()]
    assert [line["global_step"] for line in lines] == [3, 6, 7]
    assert all(0 <= line["tiny_mc"]["acc,none"] <= 1 for line in lines)
    validation = [json.loads(x) for x in (dump / "metrics.validation.jsonl").read_text().splitlines()]
    assert [line["global_step"] for line in validation] == [3, 6, 7]
    assert all(line["debug"]["nll_per_token"] > 0 for line in validation)
    for step in (3, 6, 7):
        folder = dump / "evals" / f"{step:010d}"
        config = (folder / "config.yaml").read_text()
        assert f"ckpt_dir: {dump / 'checkpoints' / f'{step:010d}'}\n" in config  # the checkpoint of that step
        assert (folder / "results.json").exists()
    assert (dump / "checkpoints" / "0000000007" / "consolidated" / "consolidated.pth").exists()
    # the same run with a typo in its eval tasks stops before writing anything
    assert train_main([*arguments, f"dump_dir={data / 'bad'}", "eval.harness.tasks=[tiny_mcq]"]) == 1
    assert "unknown lm-eval task 'tiny_mcq'" in capsys.readouterr().err
    assert not (data / "bad").exists()


def test_two_processes_share_the_requests_and_give_the_same_results(lingua_checkpoint, task_dir, tmp_path):
    folder = lingua_checkpoint()
    source = tmp_path / "val" / "heldout"
    source.mkdir(parents=True)
    (source / "heldout.val.jsonl").write_text("".join(json.dumps({"text": f"doc {i} " * (i + 1)}) + "\n"
                                                      for i in range(5)))  # fmt: skip
    config = tmp_path / "eval.yaml"
    config.write_text(f"ckpt_dir: {folder}\nvalidation: {{root_dir: {tmp_path / 'val'}, sources: [heldout]}}\n"
                      f"harness: {{tasks: [tiny_mc], include_path: {task_dir}, include_defaults: false, "
                      "bootstrap_iters: 0}\ngenerator: {dtype: fp32, device: cpu}\n")  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
               "apps.main.eval", f"config={config}", f"dump_dir={tmp_path / 'two'}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=LINGUA_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main([f"config={config}", f"dump_dir={tmp_path / 'one'}"]) == 0

    two, one = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("two", "one"))
    assert two["results"]["tiny_mc"]["acc,none"] == one["results"]["tiny_mc"]["acc,none"]
    two_samples = {s["doc_id"]: s["filtered_resps"] for s in two["samples"]["tiny_mc"]}
    one_samples = {s["doc_id"]: s["filtered_resps"] for s in one["samples"]["tiny_mc"]}
    assert sorted(two_samples) == sorted(one_samples) == list(range(len(MC_DOCS)))
    for doc_id, answers in one_samples.items():
        assert [ll for ll, _ in two_samples[doc_id]] == pytest.approx([ll for ll, _ in answers], abs=1e-5)
    two, one = (json.loads((tmp_path / n / "validation.json").read_text())["heldout"] for n in ("two", "one"))
    assert two["n_documents"] == one["n_documents"] == 5 and two["n_tokens"] == one["n_tokens"]
    assert two["nll_per_token"] == pytest.approx(one["nll_per_token"], rel=1e-6)
