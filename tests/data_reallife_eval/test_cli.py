import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from data_reallife_eval.__main__ import main
from data_reallife_eval.babilong import LABELS, babilong_prompt, compare_answers
from data_reallife_eval.background import default_sentences
from data_reallife_eval.model import ByteTokenizer
from data_reallife_eval.multihop import MultihopBuilder, is_correct
from huggingface.lingua_bridge import LINGUA_LAYER_PARTS, LINGUA_TOP_LEVEL


def generate_alone(model, ids, max_new_tokens):
    """Greedy continuation of one unpadded prompt: the reference for the batched, left-padded runner."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    new = out[0, len(ids) :].tolist()
    eos = model.generation_config.eos_token_id
    return new[: new.index(eos)] if eos in new else new


def run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().out


def test_multihop_end_to_end(model_dir, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["multihop", "--model", model_dir, "--trust-remote-code", "--num-samples", "2"]
    code, printed = run([*argv, "--contexts", "0k,0.5k", "--batch-size", "3", "--out", str(out)], capsys)
    assert code == 0
    result = json.loads(out.read_text())
    assert result["config"]["add_bos"] is True  # the tiny tokenizer adds BOS itself, like Llama's
    assert set(result["results"]) == {"1-hop", "2-hop"}
    assert result["table"] in printed and "0.5k" in result["table"].splitlines()[0]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    builder = MultihopBuilder(tokenizer, default_sentences(), seed=0)
    assert len(result["samples"]) == 2 * 2 * 2
    for record in result["samples"]:
        sample = builder.sample(record["hops"], record["context"], record["index"])
        ids = tokenizer(sample.prompt).input_ids  # BOS + text, as the tokenizer does by itself
        assert record["prompt_tokens"] == len(ids) and record["answer"] == sample.answer
        expected = tokenizer.decode(generate_alone(model, ids, 8), skip_special_tokens=True)
        assert record["output"] == expected
        assert record["correct"] == is_correct(sample.answer, expected)
    for row, cells in result["results"].items():
        for column, cell in cells.items():
            hits = [s["correct"] for s in result["samples"] if f"{s['hops']}-hop" == row and s["context"] == column]
            assert cell == {"accuracy": sum(hits) / len(hits), "correct": sum(hits), "total": len(hits)}


def test_babilong_end_to_end_on_local_data(model_dir, tmp_path, capsys):
    data = tmp_path / "babilong"
    samples = {
        "qa1": [{"input": "Mary went to the office. Grass is green.", "question": "Where is Mary?", "target": "office"},
                {"input": "John moved to the garden.", "question": "Where is John?", "target": "garden"}],
        "qa5": [{"input": "Fred gave the milk to Bill.", "question": "Who received the milk?", "target": "Bill"}],
    }  # fmt: skip
    for task, records in samples.items():
        (data / "0k").mkdir(parents=True, exist_ok=True)
        (data / "0k" / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "babilong.json"
    # no --trust-remote-code: the installed LlamaCanon is registered with the Auto classes
    argv = ["babilong", "--model", model_dir, "--tasks", "qa1,qa5", "--lengths", "0k"]
    code, printed = run([*argv, "--data", str(data), "--no-bos", "--out", str(out)], capsys)
    assert code == 0
    result = json.loads(out.read_text())
    assert result["results"]["qa1"]["0k"]["total"] == 2 and result["results"]["qa5"]["0k"]["total"] == 1
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    for record in result["samples"]:
        sample = samples[record["task"]][record["index"]]
        prompt = babilong_prompt(record["task"], sample["input"], sample["question"])
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        expected = tokenizer.decode(generate_alone(model, ids, 20), skip_special_tokens=True)
        assert record["output"] == expected and record["prompt_tokens"] == len(ids)
        labels = LABELS[record["task"]]
        assert record["correct"] == compare_answers(sample["target"], expected, sample["question"], labels)


def test_multihop_paper_setting_any_task_and_own_instruction(model_dir, tmp_path, capsys):
    instruction = tmp_path / "instruction.txt"
    instruction.write_text("Work out the birth years.\n")
    names = tmp_path / "names"
    names.mkdir()
    for part in ("first", "middle", "last"):
        (names / f"{part}_name.txt").write_text("\n".join(f"{part.title()}{c}" for c in "abcdefgh") + "\n")
    out = tmp_path / "paper.json"
    argv = ["multihop", "--model", model_dir, "--setting", "paper", "--tasks", "5x1,4x3", "--contexts", "0k,300"]
    argv += ["--instruction", str(instruction), "--names", str(names), "--num-samples", "3", "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"1-hop", "3-hop-N4"} and result["config"]["setting"] == "paper"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    from data_reallife_eval.multihop import load_names

    builder = MultihopBuilder(tokenizer, default_sentences(), setting="paper", instruction="Work out the birth years.",
                              names=load_names(str(names)))  # fmt: skip
    assert len(result["samples"]) == 2 * 2 * 3
    for record in result["samples"]:
        sample = builder.samples(record["hops"], record["context"], 3, record["people"])[record["index"]]
        assert record["person"] == sample.person and record["answer"] == sample.answer
        assert record["person"].split()[0].startswith("First") and sample.prompt.endswith("year of ")
        assert sample.prompt.startswith("Work out the birth years.\n\n<context>") == (record["hops"] == 3)
        ids = tokenizer(sample.prompt).input_ids
        assert record["prompt_tokens"] == len(ids)
        assert record["output"] == tokenizer.decode(generate_alone(model, ids, 8), skip_special_tokens=True)


def test_babilong_with_a_prompt_file(model_dir, tmp_path, capsys):
    data = tmp_path / "babilong"
    (data / "1k").mkdir(parents=True)
    record = {"input": "Mary went to the office.", "question": "Where is Mary?", "target": "office"}
    (data / "1k" / "qa1.jsonl").write_text(json.dumps(record) + "\n")
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("qa1:\n  instruction: Name the room.\n  examples:\n    - 'Question: Where? Answer: den.'\n")
    out = tmp_path / "b.json"
    argv = ["babilong", "--model", model_dir, "--tasks", "qa1", "--lengths", "1k", "--data", str(data)]
    assert run([*argv, "--prompts", str(prompts), "--out", str(out)], capsys)[0] == 0
    result = json.loads(out.read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    prompt = "Name the room.\n\nQuestion: Where? Answer: den.\n\n<context>\nMary went to the office.\n</context>"
    prompt += "\n\nQuestion: Where is Mary?\nAnswer:"
    ids = tokenizer(prompt).input_ids
    (sample,) = result["samples"]
    assert sample["prompt_tokens"] == len(ids)
    assert sample["output"] == tokenizer.decode(generate_alone(model, ids, 20), skip_special_tokens=True)
    with pytest.raises(SystemExit):
        main([*argv, "--tasks", "qa1,qa2", "--prompts", str(prompts), "--out", str(tmp_path / "c.json")])
    assert "has no prompt for qa2" in capsys.readouterr().err


def lingua_folder(root, model, vocab_size):
    """A Lingua checkpoint step folder (consolidated/params.json + consolidated.pth) with the `bytes` tokenizer."""
    parts = {hf: lingua for lingua, hf in LINGUA_LAYER_PARTS.items()}
    top = {hf: lingua for lingua, hf in LINGUA_TOP_LEVEL.items()}
    state = {}
    for key, tensor in model.state_dict().items():
        if key in top:
            state[top[key]] = tensor
        else:
            _, _, i, *module, leaf = key.split(".")
            state[f"layers.{i}.{parts['.'.join(module)]}.{leaf}"] = tensor
    c = model.config
    params = {
        "model": {
            "dim": c.hidden_size, "n_layers": c.num_hidden_layers, "n_heads": c.num_attention_heads,
            "n_kv_heads": c.num_key_value_heads, "hidden_dim": c.intermediate_size, "vocab_size": vocab_size,
            "canon_set": c.canon_set, "weight_tying": False,
        },
        "data": {"seq_len": 8192, "tokenizer": {"name": "bytes"}},
    }  # fmt: skip
    folder = root / "consolidated"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    torch.save({"model": state}, folder / "consolidated.pth")
    return root


def test_lingua_folder_with_bytes_tokenizer(tmp_path, capsys, make_tiny_model):
    model = make_tiny_model(258, seed=3)
    model.config.rope_version = "lingua"  # a Lingua checkpoint keeps Meta's interleaved RoPE layout
    model.config.bos_token_id, model.config.eos_token_id = 256, 257
    model.generation_config.eos_token_id = 257
    folder = lingua_folder(tmp_path / "step", model, 258)
    out = tmp_path / "r.json"
    argv = ["multihop", "--model", str(folder), "--num-samples", "2", "--hops", "1", "--contexts", "0.5k"]
    assert run([*argv, "--batch-size", "2", "--out", str(out)], capsys)[0] == 0
    result = json.loads(out.read_text())
    assert result["config"]["add_bos"] is True  # Lingua's tokenizers start documents with BOS
    tokenizer = ByteTokenizer()
    builder = MultihopBuilder(tokenizer, default_sentences(), seed=0)
    for record in result["samples"]:
        sample = builder.sample(1, "0.5k", record["index"])
        ids = [256, *sample.prompt.encode("utf-8")]
        assert record["prompt_tokens"] == len(ids)
        assert record["output"] == tokenizer.decode(generate_alone(model, ids, 8))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["multihop", "--model", "/no/such/model"], "model path '/no/such/model' does not exist"),
        (["multihop", "--model", "M", "--contexts", "0k,7x"], "unknown context length '7x'"),
        (["multihop", "--model", "M", "--hops", "3"], "unknown hop count '3'"),
        (["multihop", "--model", "M", "--tasks", "61x1"], "61 people per group; expected 1..60"),
        (["multihop", "--model", "M", "--instruction", "/no/such.txt"], "--instruction '/no/such.txt' is not a"),
        (["multihop", "--model", "M", "--names", "/tmp"], "names folder '/tmp' has no first_name.txt"),
        (["babilong", "--model", "M", "--prompts", "/no/such.json"], "--prompts '/no/such.json' is not a readable"),
        (["babilong", "--model", "M", "--tasks", "qa9"], "unknown babilong task 'qa9'"),
        (["babilong", "--model", "M", "--lengths", "3k"], "unknown babilong length '3k'"),
        (["multihop", "--model", "M", "--num-samples", "0"], "--num-samples 0; expected at least 1"),
        (["multihop", "--model", "M", "--dtype", "int8"], "unknown dtype 'int8'"),
        (["babilong", "--model", "M", "--data", "/no/such/folder"], "'/no/such/folder' is neither a local folder"),
    ],
)
def test_bad_input_gives_one_clear_error(argv, message, tmp_path, capsys, model_dir):
    argv = [model_dir if a == "M" else a for a in argv]
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(out)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_background_without_the_field_and_existing_output(model_dir, tmp_path, capsys):
    background = tmp_path / "bg.jsonl"
    background.write_text(json.dumps({"plaintext": "Some text."}) + "\n")
    with pytest.raises(SystemExit):
        main(["multihop", "--model", model_dir, "--background", str(background), "--out", str(tmp_path / "r.json")])
    assert "bg.jsonl line 1 has no text field 'text'" in capsys.readouterr().err
    existing = tmp_path / "existing.json"
    existing.write_text("keep me")
    with pytest.raises(SystemExit):
        main(["multihop", "--model", model_dir, "--out", str(existing)])
    assert "already exists" in capsys.readouterr().err and existing.read_text() == "keep me"
