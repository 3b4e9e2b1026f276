import collections
import json
import random
import re

import pytest

from data_reallife_eval.background import default_sentences, load_background, split_sentences
from data_reallife_eval.model import ByteTokenizer
from data_reallife_eval.multihop import (
    CONTEXTS,
    INSTRUCTION,
    PEOPLE,
    MultihopBuilder,
    Task,
    budget_of,
    extract_year,
    is_correct,
    parse_contexts,
    parse_hops,
    parse_tasks,
    render_prompt,
)

NAME = r"[A-Z][a-z]+ [A-Z][a-z]+ [A-Z][a-z]+"
DIRECT = re.compile(rf"({NAME}) was born in the year of (\d{{4}})\.")
RELATIVE = re.compile(rf"({NAME}) was born in the same year as ({NAME})\.")


def solve(prompt):
    """Read the facts back from the prompt text and answer the question: an independent path to the answer."""
    person = re.search(rf"Answer me: ({NAME}) was born in the year of ?$", prompt).group(1)
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
    people = PEOPLE[hops]
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
    assert one.prompt.endswith(f"\n\nAnswer me: {one.person} was born in the year of")
    assert "<context>" not in one.prompt and INSTRUCTION not in one.prompt
    assert two.prompt.startswith(INSTRUCTION + "\n\n<context>")
    assert two.prompt.endswith(f"</context>\n\nAnswer me: {two.person} was born in the year of")
    facts = DIRECT.findall(builder.sample(1, "0k", 3).prompt)
    assert builder.sample(1, "0k", 3).prompt == render_prompt(
        [f"{n} was born in the year of {y}." for n, y in facts], builder.sample(1, "0k", 3).person, 1
    )


@pytest.mark.parametrize("make_tokenizer", ["bpe", "bytes"])
def test_background_respects_the_token_budget(tokenizer, make_tokenizer):
    tok = tokenizer if make_tokenizer == "bpe" else ByteTokenizer()
    builder = MultihopBuilder(tok, default_sentences(), seed=1)
    longest = max(len(tok.encode(s, add_special_tokens=False)) for s in default_sentences()[:500])
    for hops in PEOPLE:
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
    for hops in PEOPLE:
        forward = [a.sample(hops, "2k", i) for i in range(3)]
        backward = [b.sample(hops, "2k", i) for i in (2, 1, 0)]  # the call order does not matter
        assert forward == backward[::-1]
        assert a.sample(hops, "2k", 0).prompt != c.sample(hops, "2k", 0).prompt
        assert a.sample(hops, "2k", 0).prompt != a.sample(hops, "2k", 1).prompt
        # the same people and question at every length: only the background changes
        across = {(s.person, s.answer) for s in (a.sample(hops, label, 5) for label in CONTEXTS)}
        assert len(across) == 1


def test_asked_person_is_not_always_the_first_fact(builder):
    """The asked person is not always the first fact's: every position is asked about equally often."""
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


def test_parse_tasks_hops_and_lengths():
    assert parse_hops("1,2") == [Task(5, 1), Task(3, 2)] and [t.label for t in parse_hops("1,2")] == ["1-hop", "2-hop"]
    assert parse_tasks("5x1,4x3,60x2") == [Task(5, 1), Task(4, 3), Task(60, 2)]
    assert [t.label for t in parse_tasks("3x2,4x3")] == ["2-hop", "3-hop-N4"]
    assert parse_contexts("0k,0.5k,6k,7k,1.5k,750") == ["0k", "0.5k", "6k", "7k", "1.5k", "750"]
    assert [budget_of(c) for c in ("0.5k", "7k", "1.5k", "750")] == [500, 7000, 1500, 750]
    with pytest.raises(ValueError, match=r"unknown hop count '3' without a group size"):
        parse_hops("1,3")
    with pytest.raises(ValueError, match=r"61 people per group; expected 1..60"):
        parse_tasks("61x1")
    with pytest.raises(ValueError, match=r"task '5y1'; expected NxK"):
        parse_tasks("5y1")
    with pytest.raises(ValueError, match=r"unknown context length '7x'; expected one of 0k, 0.5k"):
        parse_contexts("1k,7x")


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


@pytest.mark.parametrize("people, hops", [(4, 3), (60, 1), (1, 4), (7, 2)])
def test_any_group_size_and_hop_count(builder, people, hops):
    for index in range(5):
        sample = builder.sample(hops, "300", index, people)
        direct, relative = DIRECT.findall(sample.prompt), RELATIVE.findall(sample.prompt)
        assert len(direct) == people and len(relative) == people * (hops - 1)
        assert len({n for n, _ in direct} | {n for n, _ in relative}) == people * hops
        assert solve(sample.prompt) == sample.answer and sample.background_tokens <= 300
        assert (sample.people, sample.hops) == (people, hops)


def paper_reference(tokenizer, sentences, people, hops, budget, num):
    """The published procedure, written out plainly: one Random(42) for the whole setting; per sample the names
    (first, middle, last per try), the years, one shuffle per later group, the background (a start index, then
    sentences while the running token count stays strictly below the budget), the interleaving; the first member of
    the last group is asked."""
    from data_synthetic_pretrain.fields import first_names, last_names, middle_names

    rng, out = random.Random(42), []
    lengths = [len(tokenizer.encode(s, add_special_tokens=False)) for s in sentences]
    for _ in range(num):
        names = []
        while len(names) < people * hops:
            name = f"{rng.choice(first_names())} {rng.choice(middle_names())} {rng.choice(last_names())}"
            if name not in names:
                names.append(name)
        years = rng.sample(list(range(1950, 2010)), people)
        group = [(names[i], years[i]) for i in range(people)]
        facts = [f"{n} was born in the year of {y}." for n, y in group]
        for g in range(1, hops):
            order = list(range(people))
            rng.shuffle(order)
            new = [(names[g * people + j], group[order[j]][1]) for j in range(people)]
            facts += [
                f"{names[g * people + j]} was born in the same year as {group[order[j]][0]}." for j in range(people)
            ]
            group = new
        background = []
        if budget > 0:
            start, total = rng.randint(0, len(sentences) - 1), 0
            for i in range(start, len(sentences)):
                if total + lengths[i] >= budget:
                    break
                background.append(sentences[i])
                total += lengths[i]
        slots = set(rng.sample(range(len(background) + len(facts)), len(facts)))
        f, b = iter(facts), iter(background)
        text = " ".join(next(f) if k in slots else next(b) for k in range(len(background) + len(facts)))
        question = f"\n\nAnswer me: {group[0][0]} was born in the year of "
        prompt = text + " " + question if hops == 1 else f"{INSTRUCTION}\n\n<context>{text}</context>{question}"
        out.append((prompt, str(group[0][1])))
    return out


@pytest.mark.parametrize("people, hops, context", [(5, 1, "0k"), (5, 1, "0.5k"), (3, 2, "1k"), (4, 3, "200")])
def test_paper_setting_follows_the_published_sampling(tokenizer, people, hops, context):
    sentences = default_sentences()[:400]  # short corpus: backgrounds also stop at its end
    builder = MultihopBuilder(tokenizer, sentences, setting="paper")
    expected = paper_reference(tokenizer, sentences, people, hops, budget_of(context), 12)
    samples = builder.samples(hops, context, 12, people)
    assert [(s.prompt, s.answer) for s in samples] == expected
    for sample in samples:
        assert sample.background_tokens < max(budget_of(context), 1)
        assert sample.prompt.endswith(" was born in the year of ")  # the published trailing space
        if hops == 1:  # the asked person is always the first fact
            assert DIRECT.findall(sample.prompt)[0] == (sample.person, sample.answer)
            assert f" \n\nAnswer me: {sample.person}" in sample.prompt  # the published space before the question
    # re-seeded per setting: the order in which settings are evaluated does not matter
    other = MultihopBuilder(tokenizer, sentences, setting="paper")
    other.samples(1 if hops > 1 else 2, "2k", 5)
    assert [s.prompt for s in other.samples(hops, context, 12, people)] == [p for p, _ in expected]


def test_instruction_and_names_can_be_replaced(tokenizer, tmp_path):
    builder = MultihopBuilder(tokenizer, default_sentences(), instruction="  Find the years.\n")
    assert builder.sample(2, "0k", 0).prompt.startswith("Find the years.\n\n<context>")
    folder = tmp_path / "names"
    folder.mkdir()
    for name, values in [("first_name", "Xena\nYuri"), ("middle_name", "Quill\n"), ("last_name", "Zed\r\nWu\n")]:
        (folder / f"{name}.txt").write_text(values)
    from data_reallife_eval.multihop import load_names

    names = load_names(str(folder))
    assert names == (("Xena", "Yuri"), ("Quill",), ("Zed", "Wu"))
    sample = MultihopBuilder(tokenizer, default_sentences(), names=names).sample(1, "0k", 0, people=4)
    assert {n for n, _ in DIRECT.findall(sample.prompt)} == {"Xena Quill Zed", "Xena Quill Wu", "Yuri Quill Zed",
                                                              "Yuri Quill Wu"}  # fmt: skip
    with pytest.raises(ValueError, match="5 distinct full names are needed"):
        MultihopBuilder(tokenizer, default_sentences(), names=names).sample(1, "0k", 0, people=5)
    with pytest.raises(ValueError, match="has no middle_name.txt"):
        (folder / "middle_name.txt").unlink()
        load_names(str(folder))
    with pytest.raises(ValueError, match="unknown multihop setting 'mine'"):
        MultihopBuilder(tokenizer, default_sentences(), setting="mine")
