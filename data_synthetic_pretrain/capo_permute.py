"""Sentence permutation of free-text biographies: the knowledge augmentation the paper applied to bioR (biographies
written by an LLM), usable on any biography, bioS included (Part 3.1: shuffled sentence order makes the knowledge
extractable).

A permuted copy keeps every sentence and changes only how the person is referred to, so that it still reads well:
the new first sentence must name the person in full, and (when the text uses a pronoun) later sentences that name
the person in full say the pronoun instead. How the text refers to the person is read off the text first:

  * "the person" (the wording of the bioR prompts, which LLMs often copy);
  * else a pronoun, the first of she, he, they that occurs as a word;
  * independently, a short name: the first name when it occurs three times or more, else the last name, else the
    middle name (three times or more), else the first name when it occurs twice. Full names are then written as the
    short name before shuffling, and the new first sentence gets the full name back.

Periods inside known abbreviations ("Ph.D.", "St. Louis", "Inc.") do not end a sentence.

    python -m data_synthetic_pretrain capo-permute bior.jsonl --copies 5 --seed 0 --out bior-permuted.jsonl
"""

import json
import os

from .atomic import atomic_output
from .capo import _hash

ABBREVIATIONS = (
    "Ph.D.", "M.D.", "B.S.", "B.A.", "M.S.", "M.A.", "M.B.A.", "U.S.", "U.K.", "D.C.", "Dr.", "Mr.", "Mrs.", "Ms.",
    "Jr.", "Sr.", "St.", "Mt.", "Ft.", "Inc.", "Corp.", "Co.", "Ltd.", "e.g.", "i.e.", "vs.",
)  # fmt: skip
PARTIAL_NAMES = ("{f} {l}", "{m} {l}", "{f} {m}", "{f}", "{l}", "{m}")  # tried in this order for the first sentence


def _bounded(text: str, at: int, size: int) -> bool:
    """Whether text[at:at+size] is a whole word (no letter or digit glued on either side)."""
    end = at + size
    return (at == 0 or not text[at - 1].isalnum()) and (end == len(text) or not text[end].isalnum())


def find_word(text: str, word: str) -> int:
    """The position of the first whole-word occurrence of `word` in `text`, or -1."""
    at = text.find(word)
    while at >= 0 and not _bounded(text, at, len(word)):
        at = text.find(word, at + 1)
    return at


def count_word(text: str, word: str) -> int:
    count = text.count(word)
    if count < 2:  # at most one occurrence: whether it is a whole word does not matter for the thresholds used
        return count
    count, at = 0, text.find(word)
    while at >= 0:
        count += _bounded(text, at, len(word))
        at = text.find(word, at + 1)
    return count


def clean(text: str) -> str:
    """One line, single spaces, without the "(50 words)" tag LLMs copied from their prompts."""
    messy = not text or text[0].isspace() or text[-1].isspace() or "  " in text or "\n" in text or "\t" in text
    if messy or "\r" in text or "(50 words)" in text:  # most texts are clean: a few substring tests say so
        return " ".join(text.replace("(50 words)", " ").split())
    return text


SUBJECTS = ("the person", "she", "he", "they")  # in order of preference
_SUBJECT_FORMS = tuple((word, f" {word} ", f"{word} ") for word in SUBJECTS)


def find_reference(text: str, first: str, middle: str, last: str) -> tuple[str | None, str | None]:
    """(subject, short name) by which the text refers to its person besides the full name: "the person", "she", "he",
    "they" or None, and the short name it uses or None (see the module docstring)."""
    lower = text.lower()
    subject = None
    for word, inside, opening in _SUBJECT_FORMS:
        if inside in lower or lower.startswith(opening):
            subject = word
            break
    first_count = count_word(text, first)
    if first_count >= 3:
        return subject, first
    if count_word(text, last) >= 3:
        return subject, last
    if count_word(text, middle) >= 3:
        return subject, middle
    return subject, first if first_count >= 2 else None


_STEMS = tuple(a.removesuffix(".") for a in ABBREVIATIONS)
_TAILS = {stem[-2:] for stem in _STEMS}  # a cheap first test: a sentence can only end in a stem with these two letters


def split_sentences(text: str, abbreviations=ABBREVIATIONS) -> list[str]:
    """The sentences of a cleaned text without their final periods: cut at ". ", except after an abbreviation."""
    stems = _STEMS if abbreviations is ABBREVIATIONS else tuple(a.removesuffix(".") for a in abbreviations)
    if text.endswith("."):
        text = text[:-1]
    pieces = text.split(". ")
    tails = _TAILS if abbreviations is ABBREVIATIONS else {stem[-2:] for stem in stems}
    if not any([piece[-2:] in tails for piece in pieces]) or not any([piece.endswith(stems) for piece in pieces]):
        return pieces
    sentences, pending = [], None
    for piece in pieces:
        if pending is not None:
            piece = f"{pending}. {piece}"
        if piece.endswith(stems) and any(
            piece.endswith(s) and _bounded(piece, len(piece) - len(s), len(s)) for s in stems
        ):
            pending = piece
            continue
        sentences.append(piece)
        pending = None
    if pending is not None:
        sentences.append(pending)
    return sentences


def _shuffled(items: list, key: int, attempt: int) -> list:
    """A uniformly random order of `items` from 64-bit hashes of (key, attempt) (Fisher-Yates, a new hash every 16
    draws so the digits stay uniform)."""
    order = items[:]
    last = len(order) - 1
    h = _hash(key, attempt, last)
    for i in range(last, 0, -1):
        if (last - i) % 16 == 15:
            h = _hash(key, attempt, i)
        h, j = divmod(h, i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def permute_biography(
    text: str, first: str, middle: str, last: str, key: int, max_tries: int = 1000, abbreviations=ABBREVIATIONS
) -> str | None:
    """A copy of the biography `text` of "first middle last" with its sentences in random order (a function of the
    integer `key`), the new first sentence naming the person in full (see the module docstring); None when no order
    allows that within `max_tries` shuffles (e.g. a text that never refers to the person)."""
    full = f"{first} {middle} {last}"
    text = clean(text)
    if not text:
        return None
    subject, short = find_reference(text, first, middle, last)
    if short:
        text = text.replace(full, short)
    sentences = split_sentences(text, abbreviations)
    candidates = None  # what a first sentence may say instead of the full name, made when first needed
    pronoun = subject if subject in ("she", "he", "they") else None
    for attempt in range(max_tries):
        order = _shuffled(sentences, key, attempt)
        head = order[0]
        if full not in head:
            if candidates is None:
                candidates = [short] if short else []
                if subject:
                    candidates += (
                        ["The person", "the person"] if subject == "the person" else [subject.title(), subject]
                    )
            for candidate in candidates:
                at = find_word(head, candidate)
                if at >= 0:
                    break
            else:  # the partial names come last (and are made only when needed)
                for candidate in (p.format(f=first, m=middle, l=last) for p in PARTIAL_NAMES):
                    at = find_word(head, candidate)
                    if at >= 0:
                        break
                else:
                    continue
            head = head[:at] + full + head[at + len(candidate) :]
        order[0] = head
        if pronoun:
            for i in range(1, len(order)):
                if full in order[i]:
                    sentence = order[i]
                    if sentence.startswith(full):
                        sentence = pronoun.title() + sentence[len(full) :]
                    order[i] = sentence.replace(full, pronoun)
        return ". ".join(order) + "."
    return None


def person_names(record: dict) -> tuple[str, str, str]:
    """(first, middle, last) of a Capo record's person, from meta["name"]."""
    parts = record["meta"]["name"].split(" ")
    if len(parts) != 3:
        raise ValueError(f"record name {record['meta']['name']!r}; expected 'First Middle Last'")
    return tuple(parts)


def permute_records(records, copies: int = 1, seed: int = 0, max_tries: int = 1000, abbreviations=ABBREVIATIONS):
    """(permuted records, failures): `copies` permuted copies of every Capo biography record (bioS, or a bioR
    biography written by `capo-bior`), each `{"text", "meta": source meta + "source" (the original text) + "copy"}`;
    copy j of record i is keyed by a hash of (seed, i, j), so the output depends only on the input and the
    arguments. `failures` lists (record number, copy) that could not be permuted."""
    if copies < 1 or max_tries < 1:
        raise ValueError(f"copies={copies}, max_tries={max_tries}; expected both >= 1")
    out, failures = [], []
    for i, record in enumerate(records):
        if not isinstance(record.get("text"), str) or "name" not in record.get("meta", {}):
            raise ValueError(f"record {i} is not a Capo biography record (text and meta.name)")
        if "source" in record["meta"]:
            raise ValueError(f"record {i} is already a permuted copy; permute its source instead")
        first, middle, last = person_names(record)
        for j in range(copies):
            text = permute_biography(record["text"], first, middle, last, _hash(seed, i, j), max_tries, abbreviations)
            if text is None:
                failures.append((i, j))
                continue
            out.append({"text": text, "meta": {**record["meta"], "source": record["text"], "copy": j}})
    return out, failures


def write_permuted(files: list[str], out: str, on_failure: str = "skip", **options) -> tuple[int, int]:
    """Permute every record of the JSON Lines `files` (see `permute_records`) into the new file `out` (written
    under a temporary name, then renamed). on_failure "skip" leaves out texts that cannot be permuted, "error" stops
    before writing anything. Returns (records written, failures)."""
    if on_failure not in ("skip", "error"):
        raise ValueError(f"on_failure {on_failure!r}; expected 'skip' or 'error'")
    if os.path.exists(out):
        raise FileExistsError(f"{out} already exists; choose another --out or remove it")
    records = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    permuted, failures = permute_records(records, **options)
    if failures and on_failure == "error":
        i, j = failures[0]
        raise ValueError(f"record {i} (copy {j}) could not be permuted: its first sentence never names the person")
    with atomic_output(out) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in permuted)
    return len(permuted), len(failures)
