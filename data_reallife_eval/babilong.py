"""BABILong qa1-qa5: few-shot prompts, data loading and scoring.

Prompt layout (the reference's structure; the wording and the worked examples are ours):

    <instruction, ending with a line that fixes the answer format>

    <context>
    <example facts>
    </context>

    Question: <example question>
    Answer: <example answer>.
    ... (two examples; three for qa5)

    <context>
    <sample input>
    </context>

    Question: <sample question>
    Answer:

Scoring follows upstream BABILong's `compare_answers`: the model's first sentence must name the target and no other
label of the task (labels that appear in the question are ignored).
"""

import os

from .jsonl import describe, read_jsonl

TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")
# configs of the HF dataset RMT-team/babilong; the paper reports 0k, 1k, 2k and 4k
LENGTHS = ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k")
DEFAULT_LENGTHS = ("0k", "1k", "2k", "4k")
DEFAULT_DATA = "RMT-team/babilong"
FIELDS = ("input", "question", "target")

_ROOMS = {"bathroom", "bedroom", "garden", "hallway", "kitchen", "office"}
# The answer vocabulary of each task (as in upstream's metrics): a reply counts only if it names the target and no
# other label.
LABELS = {
    "qa1": _ROOMS,
    "qa2": _ROOMS,
    "qa3": _ROOMS,
    "qa4": _ROOMS,
    "qa5": {"Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"},
}

_ROOM_FORMAT = "Reply with a single word: the name of the place."
# task -> (instruction, [(facts, question, answer), ...])
PROMPTS = {
    "qa1": (
        "Below is a story in which people walk from room to room, hidden among sentences that have nothing to do "
        "with it. Find the last place the story puts the person you are asked about and say where that is.\n"
        + _ROOM_FORMAT,
        [
            ("Sandra went to the garden. Mary moved to the office. Sandra travelled to the bedroom.",
             "Where is Sandra?", "bedroom"),
            ("John journeyed to the kitchen. Daniel went back to the hallway. John moved to the bathroom.",
             "Where is Daniel?", "hallway"),
        ],
    ),
    "qa2": (
        "Below is a story in which people move around and carry things, hidden among sentences that have nothing to "
        "do with it. An object is wherever the person holding it went last, or where it was put down. Say where "
        "the object you are asked about is.\n" + _ROOM_FORMAT,
        [
            ("Mary picked up the milk. John moved to the garden. Mary went to the kitchen.",
             "Where is the milk?", "kitchen"),
            ("Daniel went to the hallway. Daniel took the apple there. Daniel travelled to the office. "
             "Daniel put down the apple. Daniel journeyed to the bedroom.",
             "Where is the apple?", "office"),
        ],
    ),
    "qa3": (
        "Below is a story in which people move around and carry things, hidden among sentences that have nothing to "
        "do with it. Trace where the object went, step by step, and say which place it was in just before it "
        "reached the place named in the question.\n" + _ROOM_FORMAT,
        [
            ("John took the football. John went to the garden. John travelled to the kitchen. "
             "John dropped the football.",
             "Where was the football before the kitchen?", "garden"),
            ("Mary went to the bedroom. Mary grabbed the milk there. Mary moved to the hallway. "
             "Sandra went to the office. Mary journeyed to the bathroom.",
             "Where was the milk before the bathroom?", "hallway"),
        ],
    ),
    "qa4": (
        "Below are statements about how rooms lie relative to each other, hidden among sentences that have nothing "
        "to do with them. Use them to name the room the question asks for.\n" + _ROOM_FORMAT,
        [
            ("The office is east of the hallway. The kitchen is north of the office.",
             "What is north of the office?", "kitchen"),
            ("The garden is west of the bedroom. The bedroom is south of the bathroom.",
             "What is the bedroom south of?", "bathroom"),
        ],
    ),
    "qa5": (
        "Below is a story in which people pick up objects and hand them to each other, hidden among sentences that "
        "have nothing to do with it. Answer the question about who gave what to whom.\n"
        "Reply with a single word: a person's name or an object.",
        [
            ("Fred picked up the football. Bill went to the garden. Fred gave the football to Jeff.",
             "What did Fred give to Jeff?", "football"),
            ("Mary took the milk. Mary handed the milk to Bill. Bill passed the milk to Fred.",
             "Who gave the milk to Fred?", "Bill"),
            ("Jeff grabbed the apple. Jeff went to the office. Jeff gave the apple to Mary.",
             "Who did Jeff give the apple to?", "Mary"),
        ],
    ),
}  # fmt: skip


def _block(context: str, question: str) -> str:
    return f"<context>\n{context.strip()}\n</context>\n\nQuestion: {question}\nAnswer:"


def babilong_prompt(task: str, context: str, question: str) -> str:
    """The few-shot prompt for one sample; it ends with "Answer:" (no trailing space, like upstream's formatter)."""
    check_tasks([task])
    instruction, examples = PROMPTS[task]
    shots = "\n\n".join(f"{_block(facts, q)} {a}." for facts, q, a in examples)
    return f"{instruction}\n\n{shots}\n\n{_block(context, question)}"


def compare_answers(target: str, output: str, question: str, labels) -> bool:
    """Upstream BABILong's rule: lower-case the output, keep its first sentence and cut it at "<context>",
    "<example>" or "question" (upstream looks for "Question" after lower-casing, which never matches; we cut at the
    word as intended); labels mentioned in the question are never answers; correct iff the target is the only
    remaining label found (as a substring) in what is left."""
    output = output.lower().split(".")[0]
    for marker in ("<context>", "<example>", "question"):
        output = output.split(marker)[0]
    question = question.lower()
    labels = {label.lower() for label in labels}
    found = {label for label in labels if label in output and label not in question}
    return found == {target.lower()}


def check_tasks(tasks) -> None:
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown babilong task {task!r}; expected one of {', '.join(TASKS)}")


def check_lengths(lengths) -> None:
    for length in lengths:
        if length not in LENGTHS:
            raise ValueError(f"unknown babilong length {length!r}; expected one of {', '.join(LENGTHS)}")


def _check_record(record, where: str) -> dict:
    if not isinstance(record, dict) or any(not isinstance(record.get(field), str) for field in FIELDS):
        raise ValueError(f"{where} needs string fields {', '.join(FIELDS)} (found {describe(record)})")
    return {field: record[field] for field in FIELDS}


def local_path(data: str, task: str, length: str) -> str:
    return os.path.join(data, length, f"{task}.jsonl")


def load_babilong(task: str, length: str, data: str = DEFAULT_DATA) -> list[dict]:
    """The samples of one task and length as dicts with `input`, `question`, `target`.

    `data` is a local folder laid out like the HF dataset (`<data>/<length>/<task>.jsonl`, one JSON object per
    line) or a Hugging Face dataset id (config = length, split = task), e.g. RMT-team/babilong or
    RMT-team/babilong-1k-samples.
    """
    check_tasks([task])
    check_lengths([length])
    if os.path.isdir(data):
        where = local_path(data, task, length)
        if not os.path.isfile(where):
            raise ValueError(f"babilong folder {data} has no {length}/{task}.jsonl (expected {where})")
        records = [_check_record(record, f"{where} line {number}") for number, record in read_jsonl(where)]
    elif os.path.exists(data):
        raise ValueError(f"babilong data {data!r} is a file; expected a folder <length>/<task>.jsonl or a dataset id")
    else:
        import datasets

        where = f"dataset {data} {length}/{task}"
        try:
            split = datasets.load_dataset(data, length, split=task)
        except Exception as error:  # offline, unknown id or config: one message with the cause
            raise ValueError(
                f"babilong data {data!r} is neither a local folder nor a loadable Hugging Face dataset "
                f"with config {length!r} and split {task!r} ({error})"
            ) from None
        records = [_check_record(record, where) for record in split]
    if not records:
        raise ValueError(f"{where} holds no samples")
    return records


def score(task: str, sample: dict, output: str) -> bool:
    return compare_answers(sample["target"], output, sample["question"], LABELS[task])
