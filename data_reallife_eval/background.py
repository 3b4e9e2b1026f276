"""Background ("junk") text for the multi-hop task: sentences from a JSONL file, a Hugging Face dataset, or a
built-in generator that needs no download.

Sentences are cut by a regular expression, not a downloaded sentence-splitter model: the background only has to be
natural-looking filler cut at sentence ends.
"""

import os
import random
import re
from functools import cache

from .jsonl import describe, read_jsonl

# A sentence ends at . ! or ? (optionally followed by one closing quote or bracket) and the next one starts with an
# upper-case letter, a digit or an opening quote after whitespace. Abbreviations ("Dr. Smith") may be split too:
# harmless for filler text.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=[\"'“‘(\[]?[A-Z0-9])")
MAX_CHARS = 5_000_000  # enough distinct filler for thousands of 6k-token contexts; bounds memory for big dumps
DEFAULT_SENTENCES = 6000  # about 90k tokens with a typical BPE tokenizer: a 6k context rarely repeats text


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, whitespace-normalised; pieces without a letter (headings of digits, stray
    punctuation) are dropped."""
    out = []
    for line in text.splitlines():
        for piece in _SENTENCE_END.split(line):
            piece = " ".join(piece.split())
            if any(c.isalpha() for c in piece):
                out.append(piece)
    return out


@cache
def default_sentences(count: int = DEFAULT_SENTENCES, seed: int = 0) -> tuple[str, ...]:
    """Filler sentences made of common English words (Faker's en_US lorem list, sorted so that only its content
    matters, never Faker's own random stream). They contain no digits, so no year can be read from them."""
    from faker.providers.lorem.en_US import Provider

    words = sorted(set(Provider.word_list))
    rng = random.Random(f"background|{seed}")
    sentences = []
    for _ in range(count):
        chosen = rng.choices(words, k=rng.randint(6, 20))
        if len(chosen) > 9 and rng.random() < 0.4:  # a clause break now and then, as in real prose
            cut = rng.randint(3, len(chosen) - 4)
            chosen[cut] += ","
        end = rng.choices(".?!", weights=(90, 7, 3))[0]
        sentence = " ".join(chosen)
        sentences.append(sentence[0].upper() + sentence[1:] + end)
    return tuple(sentences)


def _documents_from_jsonl(path: str, field: str):
    for number, record in read_jsonl(path):
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise ValueError(
                f"background file {path} line {number} has no text field {field!r} (found {describe(record)}); "
                f"pass --background-field NAME"
            )
        yield record[field]


def _documents_from_hub(name: str, field: str, config: str | None, split: str):
    import datasets

    try:
        stream = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as error:  # offline, unknown name, unknown config: all end up here with their own message
        raise ValueError(
            f"background {name!r} is neither a local JSONL file nor a loadable Hugging Face dataset ({error})"
        ) from None
    for record in stream:
        if not isinstance(record.get(field), str):
            raise ValueError(
                f"background dataset {name!r} has no text field {field!r} (found {describe(record)}); "
                f"pass --background-field NAME"
            )
        yield record[field]


def load_background(
    source: str | None = None, field: str = "text", config: str | None = None, split: str = "train"
) -> tuple[str, ...]:
    """The background sentences: built-in filler when `source` is None, else the documents of a local JSONL file
    (one object per line, text under `field`) or of a Hugging Face dataset, read until MAX_CHARS characters."""
    if source is None:
        return default_sentences()
    if os.path.isfile(source):
        documents = _documents_from_jsonl(source, field)
    elif os.path.exists(source) or source.endswith(".jsonl"):
        raise ValueError(f"background {source!r} is not a readable JSONL file")
    else:
        documents = _documents_from_hub(source, field, config, split)
    sentences, chars = [], 0
    for document in documents:
        for sentence in split_sentences(document):
            sentences.append(sentence)
            chars += len(sentence) + 1
        if chars >= MAX_CHARS:
            break
    if not sentences:
        raise ValueError(f"background {source!r} holds no sentences in field {field!r}")
    return tuple(sentences)
