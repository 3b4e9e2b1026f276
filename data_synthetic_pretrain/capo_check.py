"""Checking Capo records without the generator.

A record is read the way a person would read it: every sentence of a biography is matched against the wording
tables (capo_templates) to find which attribute it states and with what value, and every value is checked against the
field lists (a known city, university, major or employer; a date with day 1-28 and year 1900-2099; the work city is
the employer's headquarters; the subject's pronoun agrees with the first name). Nothing here calls the generator, so
a bug that gives a person wrong attributes cannot hide behind the same bug in the check.

What one record cannot show (that a biography states *this* person's attributes) is checked across records:
`Statements` collects what every record says about each person (seed, person index) and about each full name, and
reports any record that contradicts an earlier one, e.g. two biographies of one person (multiM, the test split's
held-out biographies, QA answers, bioR prompts) that disagree on the birth city, or one name used for two people.
"""

import calendar
import re
from functools import cache

from . import fields
from .capo import CapoParams
from .capo_templates import ATTRIBUTES, BIO_TEMPLATES, BIOR_FACTS, BIOR_INSTRUCTIONS, BIOR_WORDS, QUESTIONS

YEARS = range(1900, 2100)
DAYS = range(1, 29)
_MONTHS = {calendar.month_name[m]: m for m in range(1, 13)}
_DATE = re.compile(r"(?P<month>[A-Z][a-z]+) (?P<day>\d{1,2}), (?P<year>\d{4})")
_REVERSED_DATE = re.compile(r"(?P<day>\d{1,2}) of (?P<month>[A-Z][a-z]+), (?P<year>\d{4})")


@cache
def _lists():
    first = fields.first_names()
    headquarters = dict(line.split("; ") for line in fields.companies())
    return {
        "first": {name: i < fields.FEMALE_FIRST_NAMES for i, name in enumerate(first)},  # name -> female
        "middle": frozenset(fields.middle_names()),
        "last": frozenset(fields.last_names()),
        "birth_city": frozenset(fields.cities()),
        "university": frozenset(fields.universities()),
        "major": frozenset(fields.majors()),
        "employer": headquarters,  # company -> headquarters city
    }


def check_name(name: str) -> str | None:
    """None when `name` is "First Middle Last" from the field lists, else the reason."""
    parts = name.split(" ")
    lists = _lists()
    if (
        len(parts) != 3
        or parts[0] not in lists["first"]
        or parts[1] not in lists["middle"]
        or parts[2] not in lists["last"]
    ):
        return f"{name!r} is not a first, middle and last name from the field lists"
    return None


def pronoun_of(name: str) -> str:
    return "She" if _lists()["first"][name.split(" ")[0]] else "He"


def canonical_date(text: str, reverse_md: bool = False) -> str | None:
    """The date as "Month D, YYYY" when `text` is a valid birth date in the expected format, else None."""
    match = (_REVERSED_DATE if reverse_md else _DATE).fullmatch(text)
    if match is None or match["month"] not in _MONTHS:
        return None
    day, year = int(match["day"]), int(match["year"])
    if day not in DAYS or year not in YEARS or match["day"] != str(day):
        return None
    return f"{match['month']} {day}, {year}"


def canonical_value(attribute: str, value: str, reverse_md: bool = False) -> str | None:
    """The value in canonical form when it is a valid value of `attribute`, else None (work cities are checked
    against the employer by the caller)."""
    if attribute == "birth_date":
        return canonical_date(value, reverse_md)
    if attribute == "work_city":
        return value if value in _lists()["employer"].values() else None
    return value if value in _lists()[attribute] else None


@cache
def _bio_patterns() -> tuple[tuple[str, str, str], ...]:
    """(attribute, text before the value, text after it) of every template, with the subject left as "{s}"."""
    patterns = []
    for attribute in ATTRIBUTES:
        for template in BIO_TEMPLATES[attribute]:
            before, after = template.split("{v}")
            patterns.append((attribute, before, after))
    return tuple(patterns)


def read_sentence(sentence: str, subject: str, reverse_md: bool = False) -> tuple[str, str] | None:
    """(attribute, canonical value) that `sentence` states about `subject` (a full name, He or She) by one of the
    templates, or None when no template with a valid value reads it that way."""
    if sentence.startswith(subject + " "):
        skeleton = "{s}" + sentence[len(subject) :]
    else:
        mid = subject.lower() if subject in ("He", "She") else subject
        at = sentence.find(f" {mid} ")
        if at < 0:
            return None
        skeleton = sentence[: at + 1] + "{s}" + sentence[at + 1 + len(mid) :]
    for attribute, before, after in _bio_patterns():
        if len(skeleton) > len(before) + len(after) and skeleton.startswith(before) and skeleton.endswith(after):
            value = canonical_value(attribute, skeleton[len(before) : len(skeleton) - len(after)], reverse_md)
            if value is not None:
                return attribute, value
    return None


def read_bio(text: str, name: str, permute: bool, fullname: bool, reverse_md: bool) -> tuple[str | None, dict]:
    """(reason or None, {attribute: canonical value}) for a bioS biography of `name`."""
    if not text.endswith("."):
        return "the biography does not end with a period", {}
    sentences = [s + "." for s in text[:-1].split(". ")]
    if len(sentences) != len(ATTRIBUTES):
        return f"{len(sentences)} sentences; expected {len(ATTRIBUTES)}", {}
    stated, order = {}, []
    pronoun = pronoun_of(name)
    for position, sentence in enumerate(sentences):
        subject = name if position == 0 or fullname else pronoun
        reading = read_sentence(sentence, subject, reverse_md)
        if reading is None:
            return f"sentence {position + 1} {sentence!r} states no attribute of {subject!r} by a template", {}
        attribute, value = reading
        if attribute in stated:
            return f"the biography states {attribute} twice", {}
        stated[attribute] = value
        order.append(attribute)
    if not permute and order != list(ATTRIBUTES):
        return f"sentence order {order} is not the fixed order {list(ATTRIBUTES)}", {}
    return None, stated | {"order": order}


def read_qa(text: str, meta: dict) -> tuple[str | None, dict]:
    attribute = meta["attribute"]
    if attribute not in QUESTIONS:
        return f"unknown QA attribute {attribute!r}", {}
    before, after = QUESTIONS[attribute].split("{s}")
    question, separator, answer = text.partition(" Answer: ")
    if not separator or not question.startswith(before) or not question.endswith(after):
        return f"QA text {text!r} is not the {attribute} question followed by ' Answer: '", {}
    name = question[len(before) : len(question) - len(after)]
    if name != meta["name"] or meta["prompt"] != f"{question} Answer:" or meta["answer"] != answer:
        return "the QA text does not match meta name/prompt/answer", {}
    value = canonical_value(attribute, answer)
    if value is None:
        return f"QA answer {answer!r} is no valid {attribute}", {}
    return None, {attribute: value}


@cache
def _bior_patterns() -> tuple[tuple[str, re.Pattern], ...]:
    """(fact group, regex with one named group per attribute) of every bioR fact phrasing."""
    patterns = []
    for group, phrasings in BIOR_FACTS.items():
        for phrasing in phrasings:
            regex = re.escape(phrasing)
            for attribute in ATTRIBUTES:
                regex = regex.replace(re.escape("{" + attribute + "}"), f"(?P<{attribute}>.+?)")
            patterns.append((group, re.compile(regex)))
    return tuple(patterns)


def read_bior_prompt(text: str, name: str, mode: int, words: int) -> tuple[str | None, dict]:
    instruction = BIOR_INSTRUCTIONS[mode].format(w=words, s=name)
    if words not in range(BIOR_WORDS[0], BIOR_WORDS[1] + 1) or not text.startswith(instruction + " "):
        return f"the prompt does not start with the mode-{mode} instruction for {name}", {}
    facts = text[len(instruction) + 1 :]
    if not facts.endswith("."):
        return "the prompt does not end with a period", {}
    stated, groups = {}, []
    for sentence in facts[:-1].split(". "):
        for group, pattern in _bior_patterns():
            match = pattern.fullmatch(sentence + ".")
            if match is None:
                continue
            values = {a: canonical_value(a, v) for a, v in match.groupdict().items()}
            if None not in values.values():
                groups.append(group)
                stated.update(values)
                break
        else:
            return f"prompt sentence {sentence!r} is no fact phrasing with valid values", {}
    if sorted(groups) != sorted(BIOR_FACTS):
        return f"the prompt states the fact groups {groups}; expected each of {list(BIOR_FACTS)} once", {}
    return None, stated


def _split(text: str) -> list[str]:
    """Sentence fragments of a biography: cut at every ". ", the final period dropped (the same cut for both sides
    of a permutation, so abbreviations cut both the same way)."""
    text = " ".join(text.replace("(50 words)", " ").split())
    return text.removesuffix(".").split(". ")


def _references(first: str, middle: str, last: str) -> re.Pattern:
    """Every way a biography may refer to its person: the full name, two or one of its parts, a pronoun, "the
    person"; longest first, so a full name is one reference."""
    names = [f"{first} {middle} {last}", f"{first} {last}", f"{middle} {last}", f"{first} {middle}", first, last]
    names.append(middle)
    words = [re.escape(n) for n in names] + ["[Tt]he person", "She", "she", "He", "he", "They", "they"]
    return re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)")


_ABBREVIATED = re.compile(r"(?:^|\s)(?:[A-Z][a-z]{0,3}|[a-z]|\S*\.\S*)$")  # "Dr", "St", "Inc", "e.g", "Ph.D"


def check_permutation(source: str, permuted: str, name: str) -> str | None:
    """None when `permuted` holds the sentences of `source` in some order, with only the references to the person
    changed, and names the person in full in its first sentence; else the reason."""
    first, middle, last = name.split(" ")
    refer = _references(first, middle, last)
    fragments = sorted(refer.sub("<who>", f) for f in _split(source))
    new = _split(permuted)
    if sorted(refer.sub("<who>", f) for f in new) != fragments:
        return "the permuted text is not the source's sentences with only the person's references changed"
    head = 0  # the first sentence may run over fragments cut at abbreviations ("Dr. ...", "Ph.D. ...")
    while head + 1 < len(new) and _ABBREVIATED.search(new[head]):
        head += 1
    if name not in ". ".join(new[: head + 1]):
        return f"the first sentence of the permuted text does not name {name} in full"
    if not permuted.endswith("."):
        return "the permuted text does not end with a period"
    return None


class Statements:
    """What the records checked so far state about each person and each name; `add` reports contradictions."""

    def __init__(self):
        self.people: dict[tuple, dict] = {}  # (seed, person) -> {attribute: (value, where it was first stated)}
        self.names: dict[tuple, tuple[int, str]] = {}  # (seed, full name) -> (person, where)

    def add(self, key: tuple, facts: dict, where: str) -> str | None:
        seed, index = key
        name = facts.get("name")
        if name is not None:
            owner, first = self.names.setdefault((seed, name), (index, where))
            if owner != index:
                return f"the name {name!r} belongs to person {owner} ({first}), not to person {index}"
        known = self.people.setdefault(key, {})
        for attribute, value in facts.items():
            stated, first = known.setdefault(attribute, (value, where))
            if stated != value:
                return f"person {index}'s {attribute} is {value!r} here but {stated!r} in {first}"
        return None


def statements(record: dict) -> tuple[str | None, tuple | None, dict]:
    """(reason or None, (seed, person), facts): checks one Capo record on its own and returns what it states about
    its person (name and canonical attribute values) for the cross-record check."""
    meta, text = record["meta"], record["text"]
    if not isinstance(text, str) or not text:
        return "text is not a non-empty string", None, {}
    params = CapoParams(**meta["params"])
    params.check()
    if "source" in meta:  # a biography permuted by capo-permute: the permutation, then the source it came from
        reason = check_permutation(meta["source"], text, meta["name"])
        if reason is not None:
            return reason, None, {}
        source_meta = {k: v for k, v in meta.items() if k not in ("source", "copy")}
        return statements({"text": meta["source"], "meta": source_meta})
    if params.kind == "bioR" and "prompt" in meta:  # a biography written by a language model: what its prompt asked for
        return statements({"text": meta["prompt"], "meta": {k: v for k, v in meta.items() if k != "prompt"}})
    index, name = meta["person"], meta["name"]
    if not 0 <= index < params.people:
        return f"person {index} is not among the preset's {params.people} people", None, {}
    reason = check_name(name)
    if reason is not None:
        return reason, None, {}
    key = (meta["seed"], index)
    if params.kind == "qa":
        half = params.people // 2
        if (index < half) != (meta["split"] == "train"):
            return f"person {index} belongs to the other QA split", None, {}
        reason, facts = read_qa(text, meta)
        return reason, key, facts | {"name": name}
    if (meta["bio"] < params.bios) != (meta["split"] == "train"):
        return f"biography number {meta['bio']} in the {meta['split']} split of a multi{params.bios} preset", None, {}
    if params.kind == "bioR":
        reason, facts = read_bior_prompt(text, name, params.mode, meta["words"])
    else:
        reason, facts = read_bio(text, name, params.permute, params.fullname, params.reverse_md)
        if reason is None and facts.pop("order") != list(meta["order"]):
            reason = f"meta order {meta['order']} does not match the text's"
    if reason is None and "employer" in facts and _lists()["employer"][facts["employer"]] != facts["work_city"]:
        reason = f"work city {facts['work_city']!r} is not the headquarters of {facts['employer']!r}"
    return reason, key, facts | {"name": name}


def verify_capo(record: dict) -> str | None:
    """None when the record is a correct Capo sample on its own, else the reason (`Statements` adds the check
    across records)."""
    return statements(record)[0]
