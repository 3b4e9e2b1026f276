"""Reading JSON Lines input files (background text, local BABILong data) with one clear error per bad line."""

import json
from collections.abc import Iterator


def read_jsonl(path: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for every non-blank line of `path`."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {number} is not JSON ({error.msg})") from None


def describe(record) -> str:
    """What a record holds, for error messages: its sorted keys, or its type when it is not an object."""
    return str(sorted(record)) if isinstance(record, dict) else type(record).__name__
