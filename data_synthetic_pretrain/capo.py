"""Capo: knowledge capacity. Biographies of synthetic people (bioS), QA pairs about them, and prompts asking an LLM to
write biographies (bioR) (Physics of LM Parts 3.1, 3.3 and 4.1).

The people. Person i of seed s is a pure function of (s, i): its full name is the i-th value of a keyed
pseudo-random permutation of all 400 x 400 x 1000 first/middle/last combinations (so names are unique and no table
is kept), and its attributes are read off a 64-bit hash of (s, i) in mixed radix: birth date (day 1-28, month, year
1900-2099), birth city, university, major and employer, each uniform; the work city is the employer's headquarters.
A preset's N takes people 0..N-1, so presets with the same N and seed (bioS, QA, bioR) describe the same people.

Sample index -> (person, number). Index i is in round r = i // N (QA: i // (6 * people of the split)); within a
round a keyed affine permutation spreads the people, so a file never holds a person's biographies side by side.
bioS biography number is r mod M in the train split (multiM: M fixed biographies per person, seen once per M
rounds; --num N*M writes each once) and M + r in the test split (biographies never used in training). QA: the train
split asks about people 0..N/2-1, the test split about the rest (Part 3.1), six questions per person.

Everything random is hashed from integers (splitmix64), not drawn from `random.Random`: a sample costs a few
microseconds and is the same on every machine and for any --workers/--shards.
"""

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import permutations
from typing import NamedTuple

from . import fields
from .atomic import atomic_output
from .capo_templates import ATTRIBUTES, BIO_TEMPLATES, BIOR_FACTS, BIOR_INSTRUCTIONS, BIOR_WORDS, QUESTIONS

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
FIRST_YEAR, YEARS, DAYS = 1900, 200, 28
KINDS = ("bioS", "qa", "bioR")

_MASK = (1 << 64) - 1


def _hash(key: int, a: int, b: int = 0) -> int:
    """64 random bits for (key, a, b): splitmix64's finaliser (a bijective, well-mixing 64-bit hash in plain
    integer arithmetic) applied to a combination of the three."""
    x = (key + a * 0x9E3779B97F4A7C15 + b * 0xD1B54A32D192ED03) & _MASK
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


class _Keys(NamedTuple):
    person: int
    names: tuple[int, ...]  # one per Feistel round
    bioS: int
    bioR: int
    order: dict[str, int]  # per kind: the shuffle of the people in each round


@cache
def _keys(seed: int) -> _Keys:
    def key(purpose: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"capo|{purpose}|{seed}".encode(), digest_size=8).digest(), "little")

    names = tuple(key(f"name-{r}") for r in range(4))
    return _Keys(key("person"), names, key("bioS"), key("bioR"), {k: key(f"order-{k}") for k in KINDS})


# ----------------------------------------------------------------------------------------------------------------
# People

_FIRST, _MIDDLE, _LAST = fields.first_names(), fields.middle_names(), fields.last_names()
_CITIES, _UNIVERSITIES, _MAJORS = fields.cities(), fields.universities(), fields.majors()
_COMPANIES = tuple(tuple(line.split("; ")) for line in fields.companies())  # (name, headquarters city)
NAME_SPACE = len(_FIRST) * len(_MIDDLE) * len(_LAST)  # distinct full names: the most people a preset can have
_SIDE = math.isqrt(NAME_SPACE - 1) + 1


class Person(NamedTuple):
    index: int
    name: str  # "First Middle Last"
    first_name: str
    middle_name: str
    last_name: str
    female: bool  # from the first name (fields.first_names(): 200 female, then 200 male)
    birth_day: int
    birth_month: str
    birth_year: int
    # the six attributes, in ATTRIBUTES order (self[9:])
    birth_date: str  # "Month D, YYYY"
    birth_city: str
    university: str
    major: str
    employer: str
    work_city: str  # the employer's headquarters

    @property
    def pronoun(self) -> str:
        return "She" if self.female else "He"

    def values(self) -> tuple[str, ...]:
        """The six attribute strings, in ATTRIBUTES order."""
        return self[9:]


def _name_code(keys: tuple[int, ...], index: int) -> int:
    """A keyed permutation of range(NAME_SPACE): a Feistel network on (left, right) in Z_side^2 with
    side^2 >= NAME_SPACE, cycle-walked back into range (rarely needed: side^2 exceeds it by 0.014%)."""
    code = index
    while True:
        left, right = divmod(code, _SIDE)
        for key in keys:
            left, right = right, (left + (((right ^ key) * 0x9E3779B97F4A7C15 & _MASK) >> 32)) % _SIDE
        code = left * _SIDE + right
        if code < NAME_SPACE:
            return code


def person(seed: int, index: int) -> Person:
    """Person `index` (0 <= index < NAME_SPACE) of the people set of `seed`."""
    keys = _keys(seed)
    code, f = divmod(_name_code(keys.names, index), len(_FIRST))
    last, m = divmod(code, len(_MIDDLE))
    h, day = divmod(_hash(keys.person, index), DAYS)
    h, month = divmod(h, 12)
    h, year = divmod(h, YEARS)
    h, city = divmod(h, len(_CITIES))
    h, university = divmod(h, len(_UNIVERSITIES))
    h, major = divmod(h, len(_MAJORS))
    employer, hq = _COMPANIES[h % len(_COMPANIES)]
    first, middle, last = _FIRST[f], _MIDDLE[m], _LAST[last]
    month, year = MONTHS[month], FIRST_YEAR + year
    return Person(
        index, f"{first} {middle} {last}", first, middle, last, 2 * f < len(_FIRST), day + 1, month, year,
        f"{month} {day + 1}, {year}", _CITIES[city], _UNIVERSITIES[university], _MAJORS[major], employer, hq,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Presets: a naming scheme, so any people count works (Part 3.3 scales N)


@dataclass(frozen=True)
class CapoParams:
    kind: str  # "bioS" biographies, "qa" question-answer pairs, "bioR" prompts for an LLM
    people: int  # N
    bios: int = 1  # M: biographies (bioS) or prompts (bioR) per person in the train split
    permute: bool = False  # bioS: sentences in random order (the full name goes to whichever comes first)
    fullname: bool = False  # bioS: every sentence names the person in full (no pronouns)
    mode: int = 0  # bioR: 0 plain instruction, 1 also asks for creativity and a varied sentence order
    reverse_md: bool = False  # bioS: birth dates written "D of Month, YYYY" instead of "Month D, YYYY"

    def check(self):
        if self.kind not in KINDS:
            raise ValueError(f"Capo kind {self.kind!r}; expected one of {KINDS}")
        if not 2 <= self.people <= NAME_SPACE:
            raise ValueError(f"Capo N={self.people}; expected 2 <= N <= {NAME_SPACE} (distinct full names)")
        if self.bios < 1:
            raise ValueError(f"Capo multi{self.bios}; expected at least one biography per person")
        if self.mode not in (0, 1):
            raise ValueError(f"Capo bioR mode {self.mode}; expected 0 or 1")


_PRESET = re.compile(
    r"(?:(?P<bioS>bioS)|(?P<qa>qa)|bioR(?P<mode>[01]))"
    r"(?:-(?P<count>single|multi(?P<bios>[1-9]\d*)))?(?P<permute>-permute)?(?P<fullname>-fullname)?"
    r"(?P<reverse_md>-reverse-md)?"
    r"-N(?P<people>[1-9]\d*)(?P<unit>[kM]?)"
)
PRESET_EXAMPLES = (
    "bioS-single-N100k", "bioS-multi5-N100k", "bioS-multi5-permute-N100k", "bioS-multi5-fullname-N100k",
    "bioS-multi5-permute-fullname-N100k", "bioS-single-reverse-md-N100k", "qa-N100k", "bioR0-single-N100k",
    "bioR1-multi5-N100k",
)  # fmt: skip


class CapoPresets(Mapping):
    """Preset names: bioS-{single|multiM}[-permute][-fullname][-reverse-md]-N<people>, qa-N<people>,
    bioR{0|1}-{single|multiM}-N<people>; <people> is a count with an optional k (x1000) or M (x10^6) suffix.
    Iterating lists a few examples."""

    help = (
        "bioS-{single|multiM}[-permute][-fullname][-reverse-md]-N<people>, qa-N<people> or "
        "bioR{0|1}-{single|multiM}-N<people>, <people> like 2500, 100k or 1M; e.g. bioS-multi5-permute-N100k"
    )

    def __getitem__(self, name: str) -> CapoParams:
        match = _PRESET.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise KeyError(name)
        g = match.groupdict()
        kind = "bioS" if g["bioS"] else "qa" if g["qa"] else "bioR"
        augmented = g["permute"] or g["fullname"] or g["reverse_md"]
        # QA takes no biography count; bioS and bioR need one; only bioS has the augmentations
        if (kind == "qa") == bool(g["count"]) or (kind != "bioS" and augmented):
            raise KeyError(name)
        people = int(g["people"]) * {"": 1, "k": 1000, "M": 1000_000}[g["unit"]]
        return CapoParams(
            kind, people, int(g["bios"] or 1), bool(g["permute"]), bool(g["fullname"]), int(g["mode"] or 0),
            bool(g["reverse_md"]),
        )  # fmt: skip

    def __iter__(self):
        return iter(PRESET_EXAMPLES)

    def __len__(self):
        return len(PRESET_EXAMPLES)


PRESETS = CapoPresets()


# ----------------------------------------------------------------------------------------------------------------
# Writing. Every wording is pre-compiled into a str.format string over one argument list, (full name, the six
# values in ATTRIBUTES order, word count): a text is a join of drawn pieces and a single .format call.

_FIELDS = {"s": "{0}", **{a: f"{{{i + 1}}}" for i, a in enumerate(ATTRIBUTES)}, "w": "{7}"}


def _compile(text: str, **fixed: str) -> str:
    return text.format_map({**_FIELDS, **fixed})


# [attribute][template] with the name slot; [female][attribute][template] with the pronoun written in (capitalised
# only as the first word)
_NAMED = tuple(tuple(_compile(t, v=_FIELDS[a]) for t in BIO_TEMPLATES[a]) for a in ATTRIBUTES)
_PRONOUN = tuple(
    tuple(
        tuple(_compile(t, v=_FIELDS[a], s=p if t.startswith("{s}") else p.lower()) for t in BIO_TEMPLATES[a])
        for a in ATTRIBUTES
    )
    for p in ("He", "She")
)
_SIZES = tuple(len(BIO_TEMPLATES[a]) for a in ATTRIBUTES)
_ORDERS = tuple(permutations(range(len(ATTRIBUTES))))
_CANONICAL = tuple(range(len(ATTRIBUTES)))
_ORDER_NAMES = {order: tuple(ATTRIBUTES[a] for a in order) for order in _ORDERS}


def reversed_date(who: Person) -> str:
    """The birth date as "D of Month, YYYY" (the reverse_md format)."""
    return f"{who.birth_day} of {who.birth_month}, {who.birth_year}"


def biography(
    who: Person, seed: int, number: int, permute: bool = False, fullname: bool = False, reverse_md: bool = False
):
    """(text, order): biography `number` of `who`, one template drawn per attribute; `order` names the attribute of
    each sentence. The first sentence names the person in full, the others say He/She (or the full name with
    `fullname`). `reverse_md` writes the birth date as "D of Month, YYYY"."""
    h = _hash(_keys(seed).bioS, who.index, number)
    if permute:
        h, o = divmod(h, len(_ORDERS))
        order = _ORDERS[o]
    else:
        order = _CANONICAL
    later = _NAMED if fullname else _PRONOUN[who.female]
    a = order[0]
    h, t = divmod(h, _SIZES[a])
    pieces = [_NAMED[a][t]]
    for a in order[1:]:
        h, t = divmod(h, _SIZES[a])
        pieces.append(later[a][t])
    values = (reversed_date(who), *who[10:]) if reverse_md else who[9:]
    return " ".join(pieces).format(who.name, *values), _ORDER_NAMES[order]


_QUESTIONS = {a: _compile(QUESTIONS[a]) + " Answer:" for a in ATTRIBUTES}


def question(who: Person, attribute: str) -> tuple[str, str]:
    """(prompt ending in "Answer:", answer) for one attribute of `who`."""
    return _QUESTIONS[attribute].format(who.name), getattr(who, attribute)


_FACT_ORDERS = tuple(permutations(BIOR_FACTS))
_FACTS = {group: tuple(_compile(p) for p in patterns) for group, patterns in BIOR_FACTS.items()}
_INSTRUCTIONS = tuple(_compile(i) for i in BIOR_INSTRUCTIONS)
_WORD_CHOICES = BIOR_WORDS[1] - BIOR_WORDS[0] + 1


def bior_prompt(who: Person, seed: int, number: int, mode: int = 0) -> tuple[str, int]:
    """(prompt, words): prompt `number` asking an LLM for a biography of `who` of about `words` words, with the
    four facts (education, birth city, job, birth date) phrased by drawn patterns in a drawn order."""
    h, w = divmod(_hash(_keys(seed).bioR, who.index, number), _WORD_CHOICES)
    h, o = divmod(h, len(_FACT_ORDERS))
    pieces = [_INSTRUCTIONS[mode]]
    for group in _FACT_ORDERS[o]:
        h, t = divmod(h, len(_FACTS[group]))
        pieces.append(_FACTS[group][t])
    words = BIOR_WORDS[0] + w
    return " ".join(pieces).format(who.name, *who[9:], words), words


@lru_cache(maxsize=256)
def _affine(seed: int, kind: str, round_: int, size: int) -> tuple[int, int]:
    """(a, b) with gcd(a, size) = 1: j -> (a*j + b) % size permutes range(size), differently in every round."""
    h = _hash(_keys(seed).order[kind], round_, size)
    a = 1 + h % size
    while math.gcd(a, size) != 1:
        a = a % size + 1
    return a, (h >> 32) % size


def _locate(seed: int, kind: str, index: int, size: int) -> tuple[int, int]:
    """(round, position in the round) of sample `index` in rounds of `size` samples, positions shuffled."""
    round_, j = divmod(index, size)
    a, b = _affine(seed, kind, round_, size)
    return round_, (a * j + b) % size


def qa_people(params: CapoParams, split: str) -> range:
    """The people whose QA pairs form `split`: the first half of people 0..N-1 for train, the rest for test."""
    half = params.people // 2
    return range(half) if split == "train" else range(half, params.people)


def capo_sample(params: CapoParams, split: str, seed: int, index: int) -> dict:
    """Record `index` of (params, split, seed): `{"text", "meta"}` (see the module docstring for the mapping)."""
    if params.kind == "qa":
        people = qa_people(params, split)
        _, j = _locate(seed, "qa", index, len(ATTRIBUTES) * len(people))
        who = person(seed, people[j // len(ATTRIBUTES)])
        attribute = ATTRIBUTES[j % len(ATTRIBUTES)]
        prompt, answer = question(who, attribute)
        meta = {"person": who.index, "name": who.name, "attribute": attribute, "prompt": prompt, "answer": answer}
        return {"text": f"{prompt} {answer}", "meta": meta}
    round_, p = _locate(seed, params.kind, index, params.people)
    number = round_ % params.bios if split == "train" else params.bios + round_
    who = person(seed, p)
    meta = {"person": p, "name": who.name, "bio": number}
    if params.kind == "bioR":
        text, meta["words"] = bior_prompt(who, seed, number, params.mode)
    else:
        text, meta["order"] = biography(who, seed, number, params.permute, params.fullname, params.reverse_md)
    return {"text": text, "meta": meta}


# ----------------------------------------------------------------------------------------------------------------
# bioR: biographies written by a local language model from the prompts


def generate_bior(
    prompts,
    model,
    tokenizer=None,
    max_new_tokens=320,
    batch_size=8,
    temperature=0.7,
    top_p=0.9,
    seed=0,
    progress=True,
    trust_remote_code=False,
) -> list[dict]:
    """bioR biographies written by a Hugging Face causal LM: one `{"text", "meta"}` per bioR prompt record (as
    written by a `bioR0-...` / `bioR1-...` preset), in the same order; meta is the prompt's meta plus "prompt".

    `model` is a local folder or hub id (loaded with AutoModelForCausalLM, `trust_remote_code` passed on; the
    tokenizer from the same place unless given) or a loaded model, then with its tokenizer. The prompt goes through
    the tokenizer's chat template when it has one. temperature 0 decodes greedily. Generated text depends on the
    model, hardware and library versions, so unlike the rest of Capo it is not reproducible bit for bit (as with the
    paper's Llama-written bioR).
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts = list(prompts)
    for record in prompts:
        if record.get("meta", {}).get("params", {}).get("kind") != "bioR":
            raise ValueError(f"record {str(record)[:80]!r} is not a Capo bioR prompt (meta.params.kind != 'bioR')")
    if isinstance(model, str):
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        model = AutoModelForCausalLM.from_pretrained(model, trust_remote_code=trust_remote_code)
    if tokenizer is None:
        raise ValueError("a loaded model needs its tokenizer; pass tokenizer=")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues every row's end
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    torch.manual_seed(seed)
    written = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="bioR", disable=not progress):
            batch = prompts[start : start + batch_size]
            texts = [_as_chat(tokenizer, record["text"]) for record in batch]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(
                    **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
                )
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            for record, ids in zip(batch, new_tokens, strict=True):
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                written.append({"text": text, "meta": {**record["meta"], "prompt": record["text"]}})
    finally:
        tokenizer.padding_side = padding_side
    return written


def write_bior(prompt_files: list[str], model, out: str, **generation) -> int:
    """Generate bioR biographies (see `generate_bior`) for every prompt record in `prompt_files` into the JSON Lines
    file `out` (written under a temporary name, then renamed; an existing file is never replaced). Returns the count."""
    if os.path.exists(out):
        raise FileExistsError(f"{out} already exists; choose another --out or remove it")
    prompts = []
    for path in prompt_files:
        with open(path, encoding="utf-8") as f:
            prompts += [json.loads(line) for line in f if line.strip()]
    if not prompts:
        raise ValueError(f"no prompt records in {prompt_files}")
    records = generate_bior(prompts, model, **generation)
    with atomic_output(out) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return len(records)


def _as_chat(tokenizer, prompt: str) -> str:
    """The prompt as the model expects it: the chat template for chat models, else plain text with the BOS token."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (tokenizer.bos_token or "") + prompt + "\n"
