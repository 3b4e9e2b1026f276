import collections
import json
import re

import pytest

from data_reallife_eval.background import default_sentences, load_background, split_sentences
from data_reallife_eval.model import ByteTokenizer
from data_reallife_eval.multihop import (
    CONTEXTS,
    INSTRUCTION,
    SETTINGS,
    MultihopBuilder,
    extract_year,
    is_correct,
    parse_contexts,
    parse_hops,
    render_prompt,
)

NAME = r"[A-Z][a-z]+ [A-Z][a-z]+ [A-Z][a-z]+"
DIRECT = re.compile(rf"({NAME}) was born in the year of (\d{{4}})\.")
RELATIVE = re.compile(rf"({NAME}) was born in the same year as ({NAME})\.")


def solve(prompt):
    """Read the facts back from the prompt text and answer the question: an independent path to the answer."""
    person = re.search(rf"Answer: ({NAME}) was born in the year of$", prompt).group(1)
    years = dict(DIRECT.findall(prompt))
    links = dict(RELATIVE.findall(prompt))
    while person in links:
        person = links[person]
    return years[person]


@pytest.fixture(scope="module")
def builder(tokenizer):
    return MultihopBuilder(tokenizer, default_sentences(), seed=0)


@pytest.mark.parametrize("hops", [1, 2])
def test_facts_are_consistent_and_answerable(builder, hops):
    people = SETTINGS[hops]
    for index in range(20):
        sample = builder.sample(hops, "0.5k", index)
        direct, relative = DIRECT.findall(sample.prompt), RELATIVE.findall(sample.prompt)
        assert len(direct) == people and len(relative) == people * (hops - 1)
        names = [n for n, _ in direct] + [n for n, _ in relative]
        assert len(set(names)) == people * hops  # distinct people
        assert len({y for _, y in direct}) == people and all(1950 <= int(y) <= 2009 for _, y in direct)
        if hops == 2:  # the second group maps one-to-one onto the first
            assert sorted(target for _, target in relative) == sorted(n for n, _ in direct)
            # the direct facts come before the relative ones
            context = sample.prompt[sample.prompt.index("<context>") :]
            assert context.rindex(" was born in the year of 1") < context.index("same year as")
        assert solve(sample.prompt) == sample.answer
        assert sample.person in (names[-people:])


def test_prompt_structure(builder):
    one, two = builder.sample(1, "1k", 0), builder.sample(2, "1k", 0)
    assert one.prompt.endswith(f"\n\nAnswer: {one.person} was born in the year of")
    assert "<context>" not in one.prompt and INSTRUCTION not in one.prompt
    assert two.prompt.startswith(INSTRUCTION + "\n\n<context>")
    assert two.prompt.endswith(f"</context>\n\nAnswer: {two.person} was born in the year of")
    facts = DIRECT.findall(builder.sample(1, "0k", 3).prompt)
    assert builder.sample(1, "0k", 3).prompt == render_prompt(
        [f"{n} was born in the year of {y}." for n, y in facts], builder.sample(1, "0k", 3).person, 1
    )


@pytest.mark.parametrize("make_tokenizer", ["bpe", "bytes"])
def test_background_respects_the_token_budget(tokenizer, make_tokenizer):
    tok = tokenizer if make_tokenizer == "bpe" else ByteTokenizer()
    builder = MultihopBuilder(tok, default_sentences(), seed=1)
    longest = max(len(tok.encode(s, add_special_tokens=False)) for s in default_sentences()[:500])
    for hops in SETTINGS:
        for label, budget in CONTEXTS.items():
            for index in range(2):
                sample = builder.sample(hops, label, index)
                facts = re.findall(rf"{NAME} was born in the (?:year of \d{{4}}|same year as {NAME})\.", sample.prompt)
                bare = render_prompt(facts, sample.person, hops)  # the same prompt without background
                count = len(tok.encode(sample.prompt, add_special_tokens=False))
                bare_count = len(tok.encode(bare, add_special_tokens=False))
                assert count - bare_count == sample.background_tokens <= budget
                # the budget is filled up to less than one sentence (plus a few joining tokens)
                assert sample.background_tokens >= budget - longest - 8


def test_samples_are_reproducible_and_seeded(tokenizer):
    a = MultihopBuilder(tokenizer, default_sentences(), seed=0)
    b = MultihopBuilder(tokenizer, default_sentences(), seed=0)
    c = MultihopBuilder(tokenizer, default_sentences(), seed=1)
    for hops in SETTINGS:
        forward = [a.sample(hops, "2k", i) for i in range(3)]
        backward = [b.sample(hops, "2k", i) for i in (2, 1, 0)]  # the call order does not matter
        assert forward == backward[::-1]
        assert a.sample(hops, "2k", 0).prompt != c.sample(hops, "2k", 0).prompt
        assert a.sample(hops, "2k", 0).prompt != a.sample(hops, "2k", 1).prompt
        # the same people and question at every length: only the background changes
        across = {(s.person, s.answer) for s in (a.sample(hops, label, 5) for label in CONTEXTS)}
        assert len(across) == 1


def test_asked_person_is_not_always_the_first_fact(builder):
    """The reference always asked the first fact's person; here every position is asked about equally often."""
    positions = collections.Counter()
    for index in range(250):
        sample = builder.sample(1, "0k", index)
        names = [n for n, _ in DIRECT.findall(sample.prompt)]
        positions[names.index(sample.person)] += 1
    assert sorted(positions) == [0, 1, 2, 3, 4]
    assert min(positions.values()) >= 30


@pytest.mark.parametrize(
    "output, correct",
    [(" 1987", True), ("1987.", True), ("\n1987 and", True), (" 1987, not 1990", True), (" 19870", False),
     (" 1988", False), (" in 1987", False), ("", False), (" 987", False), ("1987a", True)],
)  # fmt: skip
def test_year_is_an_exact_match(output, correct):
    assert is_correct("1987", output) is correct
    assert (extract_year(output) == "1987") is correct


def test_parse_rejects_unknown_hops_and_lengths():
    assert parse_hops("1,2") == [1, 2] and parse_contexts("0k,0.5k,6k") == ["0k", "0.5k", "6k"]
    with pytest.raises(ValueError, match=r"unknown hop count '3'"):
        parse_hops("1,3")
    with pytest.raises(ValueError, match=r"unknown context length '7k'; expected one of 0k, 0.5k"):
        parse_contexts("1k,7k")


def test_sentence_splitter_and_default_filler():
    text = 'Dr. Who went home. He said "Hi!" Then 3 cats ran?  Yes.\n\nNew line here'
    expected = ["Dr.", "Who went home.", 'He said "Hi!"', "Then 3 cats ran?", "Yes.", "New line here"]
    assert split_sentences(text) == expected
    filler = default_sentences()
    assert filler == default_sentences(seed=0) and len(set(filler)) > 0.99 * len(filler)
    assert not any(c.isdigit() for s in filler for c in s)
    assert all(s[0].isupper() and s[-1] in ".?!" for s in filler)


def test_background_from_jsonl(tmp_path):
    path = tmp_path / "bg.jsonl"
    docs = [{"plaintext": "First one here. Second one there!"}, {"plaintext": "Third is last?"}]
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    assert load_background(str(path), "plaintext") == ("First one here.", "Second one there!", "Third is last?")
    with pytest.raises(ValueError, match=r"bg.jsonl line 1 has no text field 'text' \(found \['plaintext'\]\)"):
        load_background(str(path), "text")
    with pytest.raises(ValueError, match="is not a readable JSONL file"):
        load_background(str(tmp_path / "missing.jsonl"))


def test_background_from_a_hub_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split, streaming):
        calls.append((path, name, split, streaming))
        return iter([{"text": "One. Two!"}, {"text": "Three?"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_background("user/wiki", "text", "en", "validation") == ("One.", "Two!", "Three?")
    assert calls == [("user/wiki", "en", "validation", True)]
    with pytest.raises(ValueError, match=r"dataset 'user/wiki' has no text field 'plaintext' \(found \['text'\]\)"):
        load_background("user/wiki", "plaintext")
