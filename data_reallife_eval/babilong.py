"""BABILong qa1-qa5: few-shot prompts, data loading and scoring.

The prompt has the structure of the prompts the paper used (upstream BABILong's task template, with the worked
examples rewritten as <context> blocks that end in their full answer sentences; two examples for qa1-qa4, three for
qa5), filled by one template and stripped, so it ends in "Answer:":

    <instruction, ending with a line that fixes the answer format>

    <context>
    <example facts>
    </context>

    Question: <example question>
    Answer: <the example's answer, in that format>
    ... (examples separated by a blank line)

    <post_prompt, empty in ours><context>
    <sample input>
    </context>

    Question: <sample question>
    Answer:

The instructions and examples of PROMPTS are our own wording. `load_prompts` reads any other prompt set (JSON or
YAML: per task an instruction, examples and a post_prompt), e.g. the original text, into the same template.

Scoring follows upstream BABILong's `compare_answers`: the model's first sentence must name the target and no other
label of the task (labels that appear in the question are ignored).
"""

import json
import os
from dataclasses import dataclass

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

TEMPLATE = (
    "{instruction}\n\n{examples}\n\n{post_prompt}<context>\n{context}\n</context>\n\nQuestion: {question}\nAnswer: "
)
PROMPT_KEYS = ("instruction", "examples", "post_prompt")


@dataclass(frozen=True)
class TaskPrompt:
    instruction: str
    examples: str  # the worked examples, already laid out (blocks separated by a blank line)
    post_prompt: str = ""


def example_block(facts: str, question: str, answer: str) -> str:
    """One worked example as a <context> block with its answer line (a final period is added when missing)."""
    answer = answer if answer.endswith(".") else answer + "."
    return f"<context>\n{facts}\n</context>\n\nQuestion: {question}\nAnswer: {answer}"


# task -> (instruction, [(facts, question, answer as the model should write it, the label it names), ...])
EXAMPLES = {
    "qa1": (
        "Below is a story in which people walk from room to room, hidden among sentences that have nothing to do "
        "with it, and then a question. Answer it from the story alone. When the story puts a person in several "
        "places, only the last one counts.\n"
        "Reply in exactly this form and add nothing after it: <person> was last seen in the <place>.",
        [
            ("Sandra went to the garden. Mary moved to the office. Sandra travelled to the bedroom.",
             "Where is Sandra?", "Sandra was last seen in the bedroom.", "bedroom"),
            ("John journeyed to the kitchen. Daniel went back to the hallway. John moved to the bathroom.",
             "Where is Daniel?", "Daniel was last seen in the hallway.", "hallway"),
        ],
    ),
    "qa2": (
        "Below is a story in which people move around and carry things, hidden among sentences that have nothing to "
        "do with it, and then a question. Answer it from the story alone.\n"
        "Whatever a person holds goes wherever that person goes next. Whatever a person puts down stays where it was "
        "put down.\n"
        "Reply in exactly this form and add nothing after it: The <object> is in the <place>.",
        [
            ("Mary picked up the milk. John moved to the garden. Mary went to the kitchen.",
             "Where is the milk?", "The milk is in the kitchen.", "kitchen"),
            ("Daniel went to the hallway. Daniel took the apple there. Daniel travelled to the office. "
             "Daniel put down the apple. Daniel journeyed to the bedroom.",
             "Where is the apple?", "The apple is in the office.", "office"),
        ],
    ),
    "qa3": (
        "Below is a story in which people move around and carry things, hidden among sentences that have nothing to "
        "do with it, and then a question. Answer it from the story alone.\n"
        "Whatever a person holds goes wherever that person goes next. Whatever a person puts down stays where it was "
        "put down.\n"
        "Reply in exactly this form and add nothing after it: The <object> was in the <earlier place> before it "
        "reached the <place named in the question>.",
        [
            ("John took the football. John went to the garden. John travelled to the kitchen. "
             "John dropped the football.",
             "Where was the football before the kitchen?",
             "The football was in the garden before it reached the kitchen.", "garden"),
            ("Mary went to the bedroom. Mary grabbed the milk there. Mary moved to the hallway. "
             "Sandra went to the office. Mary journeyed to the bathroom.",
             "Where was the milk before the bathroom?",
             "The milk was in the hallway before it reached the bathroom.", "hallway"),
        ],
    ),
    "qa4": (
        "Below are statements about how rooms lie relative to each other, hidden among sentences that have nothing "
        "to do with them, and then a question. Answer it from those statements alone.\n"
        "Reply with a single word, the name of the room, and add nothing after it.",
        [
            ("The office is east of the hallway. The kitchen is north of the office.",
             "What is north of the office?", "kitchen", "kitchen"),
            ("The garden is west of the bedroom. The bedroom is south of the bathroom.",
             "What is the bedroom south of?", "bathroom", "bathroom"),
        ],
    ),
    "qa5": (
        "Below is a story in which people pick up objects and hand them to each other, hidden among sentences that "
        "have nothing to do with it, and then a question. Answer it from the story alone.\n"
        "Reply with a single word, a person's name or an object, and add nothing after it. Do not explain.",
        [
            ("Fred picked up the football. Bill went to the garden. Fred gave the football to Jeff.",
             "What did Fred give to Jeff?", "football", "football"),
            ("Mary took the milk. Mary handed the milk to Bill. Bill passed the milk to Fred.",
             "Who gave the milk to Fred?", "Bill", "Bill"),
            ("Jeff grabbed the apple. Jeff went to the office. Jeff gave the apple to Mary.",
             "Who did Jeff give the apple to?", "Mary", "Mary"),
        ],
    ),
}  # fmt: skip
PROMPTS = {
    task: TaskPrompt(instruction, "\n\n".join(example_block(f, q, a) for f, q, a, _ in examples))
    for task, (instruction, examples) in EXAMPLES.items()
}


def babilong_prompt(task: str, context: str, question: str, prompts: dict | None = None) -> str:
    """The few-shot prompt for one sample, from our PROMPTS or the given prompt set; it ends with "Answer:" (the
    template's trailing space is stripped, as upstream's formatter does)."""
    check_tasks([task])
    prompts = PROMPTS if prompts is None else prompts
    if task not in prompts:
        raise ValueError(f"the prompt set has no {task}; it covers {', '.join(sorted(prompts)) or 'no task'}")
    p = prompts[task]
    return TEMPLATE.format(
        instruction=p.instruction, examples=p.examples, post_prompt=p.post_prompt, context=context.strip(),
        question=question,
    ).strip()  # fmt: skip


def load_prompts(path: str) -> dict[str, TaskPrompt]:
    """A prompt set from a JSON or YAML file: {task: {"instruction": str, "examples": str or [str, ...],
    "post_prompt": str (optional)}}; a list of examples is joined with blank lines."""
    if not os.path.isfile(path):
        raise ValueError(f"--prompts {path!r} is not a readable file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # json and yaml raise different types; both mean a malformed file
        raise ValueError(f"prompt file {path} is not valid JSON/YAML ({error})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"prompt file {path} must map task names (qa1, ...) to prompts")
    prompts = {}
    for task, entry in data.items():
        check_tasks([task])
        if not isinstance(entry, dict) or set(entry) - set(PROMPT_KEYS) or "instruction" not in entry:
            raise ValueError(
                f"prompt file {path}: {task} must be an object with instruction, examples and optional post_prompt "
                f"(found {describe(entry)})"
            )
        examples = entry.get("examples", "")
        if isinstance(examples, list) and all(isinstance(e, str) for e in examples):
            examples = "\n\n".join(examples)
        values = (entry["instruction"], examples, entry.get("post_prompt") or "")
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"prompt file {path}: {task}'s instruction, examples and post_prompt must be text")
        prompts[task] = TaskPrompt(*values)
    return prompts


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
