import json

import pytest

from data_reallife_eval.babilong import (
    EXAMPLES,
    LABELS,
    PROMPTS,
    TASKS,
    TaskPrompt,
    babilong_prompt,
    compare_answers,
    load_babilong,
    load_prompts,
)

ROOMS = LABELS["qa1"]


@pytest.mark.parametrize(
    "target, output, question, expected",
    [
        ("kitchen", " kitchen", "Where is Mary?", True),
        ("kitchen", "The answer is the Kitchen!", "Where is Mary?", True),  # case-insensitive, inside a sentence
        ("kitchen", " garden", "Where is Mary?", False),
        ("kitchen", " kitchen or garden", "Where is Mary?", False),  # two labels: not a unique answer
        ("kitchen", " kitchen. Then the garden.", "Where is Mary?", True),  # only the first sentence counts
        ("garden", " kitchen garden", "Where was the apple before the kitchen?", True),  # question labels ignored
        ("kitchen", " kitchen", "Where was the apple before the kitchen?", False),  # ... never an answer
        ("kitchen", " kitchen<context> garden", "Where is Mary?", True),
        ("kitchen", " kitchen <example> garden", "Where is Mary?", True),
        ("kitchen", " kitchen Question: where is the garden", "Where is Mary?", True),
        ("kitchen", "", "Where is Mary?", False),
        ("Fred", " fred", "Who gave the milk to Bill?", True),
        ("milk", " Fred gave the milk", "What did Fred give to Bill?", True),
    ],
)
def test_compare_answers_follows_upstream_rules(target, output, question, expected):
    labels = LABELS["qa5"] if target in {"Fred", "milk"} else ROOMS
    assert compare_answers(target, output, question, labels) is expected


def test_first_sentence_is_cut_before_markers():
    # "garden" only follows a cut marker, so it must not count against the answer
    assert compare_answers("office", "office <example> garden.", "Where is John?", ROOMS)
    assert not compare_answers("office", "garden <example> office.", "Where is John?", ROOMS)


@pytest.mark.parametrize("task", TASKS)
def test_prompt_structure(task):
    context, question = "  Mary went to the office.\nUnrelated filler text.  ", "Where is Mary?"
    prompt = babilong_prompt(task, context, question)
    instruction, examples = EXAMPLES[task]
    assert len(examples) == (3 if task == "qa5" else 2)  # the published shot counts
    assert PROMPTS[task].instruction == instruction and PROMPTS[task].post_prompt == ""
    assert prompt.startswith(instruction + "\n\n<context>\n")
    assert "Reply" in instruction.splitlines()[-1]  # the instruction ends with the answer-format line
    sample_block = "<context>\nMary went to the office.\nUnrelated filler text.\n</context>\n\nQuestion: Where is Mary?"
    assert prompt.endswith("\n\n" + sample_block + "\nAnswer:")
    assert prompt.count("<context>\n") == len(examples) + 1 and prompt.count("\nAnswer:") == len(examples) + 1
    blocks = []
    for facts, q, answer, label in examples:
        block = f"<context>\n{facts}\n</context>\n\nQuestion: {q}\nAnswer: {answer.removesuffix('.')}."
        assert block + "\n\n" in prompt
        blocks.append(block)
        # the worked answers are right by the task's own scoring rule; qa1-qa3 answer with a full sentence
        assert label in LABELS[task] and compare_answers(label, f" {answer}", q, LABELS[task])
        assert (len(answer.split()) > 3) == (task in ("qa1", "qa2", "qa3"))
    assert prompt == f"{instruction}\n\n" + "\n\n".join(blocks) + "\n\n" + sample_block + "\nAnswer:"


def test_prompt_sets_load_from_json_and_yaml(tmp_path):
    import yaml

    entry = {"instruction": "Say the room.\nOne word.", "examples": ["<context>\nA went to the den.\n</context>\n\n"
             "Question: Where is A?\nAnswer: den.", "<context>\nB is here.\n</context>\n\nQuestion: Q?\nAnswer: x."],
             "post_prompt": "Now you."}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps({"qa1": entry}))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"qa1": {**entry, "examples": "\n\n".join(entry["examples"])}}))
    for name in ("p.json", "p.yaml"):
        prompts = load_prompts(str(tmp_path / name))
        assert prompts == {"qa1": TaskPrompt(entry["instruction"], "\n\n".join(entry["examples"]), "Now you.")}
        prompt = babilong_prompt("qa1", " C went out. ", "Where is C?", prompts)
        # the paper's template: the post_prompt runs straight into the sample's <context> block
        assert prompt == (
            "Say the room.\nOne word.\n\n" + "\n\n".join(entry["examples"]) + "\n\nNow you.<context>\nC went out.\n"
            "</context>\n\nQuestion: Where is C?\nAnswer:"
        )
    with pytest.raises(ValueError, match="the prompt set has no qa2"):
        babilong_prompt("qa2", "x", "y", prompts)
    for bad, error in [("[1]", "must map task names"), ('{"qa9": {"instruction": "x"}}', "unknown babilong task"),
                       ('{"qa1": {"examples": "x"}}', "must be an object with instruction"),
                       ('{"qa1": {"instruction": 3}}', "must be text"), ("{", "not valid JSON/YAML")]:  # fmt: skip
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(ValueError, match=error):
            load_prompts(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="is not a readable file"):
        load_prompts(str(tmp_path / "missing.json"))


def write_babilong(folder, task, length, records):
    (folder / length).mkdir(parents=True, exist_ok=True)
    (folder / length / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_local_data_and_errors(tmp_path):
    records = [{"input": "Mary went to the office.", "question": "Where is Mary?", "target": "office", "x": 1}]
    write_babilong(tmp_path, "qa1", "0k", records)
    assert load_babilong("qa1", "0k", str(tmp_path)) == [{k: records[0][k] for k in ("input", "question", "target")}]
    with pytest.raises(ValueError, match=r"has no 1k/qa1.jsonl"):
        load_babilong("qa1", "1k", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown babilong task 'qa6'"):
        load_babilong("qa6", "0k", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown babilong length '3k'"):
        load_babilong("qa1", "3k", str(tmp_path))
    write_babilong(tmp_path, "qa3", "0k", [])
    with pytest.raises(ValueError, match=r"qa3.jsonl holds no samples"):
        load_babilong("qa3", "0k", str(tmp_path))
    write_babilong(tmp_path, "qa2", "0k", [{"input": "a", "question": "b"}])
    with pytest.raises(ValueError, match=r"qa2.jsonl line 1 needs string fields input, question, target"):
        load_babilong("qa2", "0k", str(tmp_path))


def test_hub_dataset_is_read_by_length_and_task(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"input": "Fred took the milk.", "question": "Who took the milk?", "target": "Fred", "extra": 0}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_babilong("qa5", "2k", "RMT-team/babilong") == [
        {"input": "Fred took the milk.", "question": "Who took the milk?", "target": "Fred"}
    ]
    assert calls == [("RMT-team/babilong", "2k", "qa5")]

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"'RMT-team/babilong' is neither a local folder nor a loadable .*no network"):
        load_babilong("qa1", "0k", "RMT-team/babilong")
