"""The bioR permutation augmenter (capo-permute) and the independent check of its output."""

import json
import math
from collections import Counter

import pytest

from data_synthetic_pretrain import make_sample
from data_synthetic_pretrain.__main__ import main
from data_synthetic_pretrain.capo_check import check_permutation, verify_capo
from data_synthetic_pretrain.capo_permute import find_reference, permute_biography, permute_records, split_sentences

NAME = ("Ann", "Bo", "Cee")
FULL = "Ann Bo Cee"
# LLM-style biographies: a pronoun, "the person" (copied from the prompt), a short name, abbreviations
PRONOUN_BIO = (
    "Ann Bo Cee was born on May 5, 1950 in St. Louis, MO. She earned a Ph.D. in Botany from Foo University.\n"
    "After graduating, she joined Acme Inc. in Dallas, TX.  She loves hiking (50 words)"
)
PERSON_BIO = (
    "The person was born in Ohio. The person studied Art at Bar College. Later the person worked for Baz Corp. in Reno."
)
NAME_BIO = "Ann Bo Cee grew up in Reno, NV. Ann studied Law. Ann works for Qux Ltd. in Austin, TX. Ann likes tea."


def sentences(text):
    return split_sentences(" ".join(text.replace("(50 words)", " ").split()))


def test_reference_and_sentences_are_read_off_the_text():
    assert find_reference(PRONOUN_BIO, *NAME)[0] == "she"
    assert find_reference(PERSON_BIO, *NAME)[0] == "the person"
    assert find_reference(NAME_BIO, *NAME) == (None, "Ann")
    assert find_reference("Then he left. He came back.", *NAME) == ("he", None)
    # periods of abbreviations do not end sentences; the "(50 words)" tag and extra whitespace go
    assert sentences(PRONOUN_BIO) == [
        "Ann Bo Cee was born on May 5, 1950 in St. Louis, MO",
        "She earned a Ph.D. in Botany from Foo University",
        "After graduating, she joined Acme Inc. in Dallas, TX",
        "She loves hiking",
    ]


@pytest.mark.parametrize("bio", [PRONOUN_BIO, PERSON_BIO, NAME_BIO])
def test_permuted_copies_keep_every_sentence_and_name_the_person_first(bio):
    orders, heads = set(), Counter()
    source = sentences(bio)
    for key in range(60):
        text = permute_biography(bio, *NAME, key)
        assert check_permutation(bio, text, FULL) is None
        new = sentences(text)
        assert len(new) == len(source) and FULL in new[0]
        orders.add(tuple(new))
        heads[next(i for i, s in enumerate(source) if s.split(" ")[-1] == new[0].split(" ")[-1])] += 1
        if bio is PRONOUN_BIO:  # later sentences say the pronoun, capitalised at the start of a sentence
            assert all(FULL not in s for s in new[1:])
            assert all(not s.startswith("she ") for s in new)
    assert len(orders) >= min(10, math.factorial(len(source)))
    assert set(heads) == set(range(len(source)))  # every sentence gets to lead
    assert permute_biography(bio, *NAME, 3) == permute_biography(bio, *NAME, 3)  # a function of the key


def test_pronoun_and_short_name_replacements():
    text = permute_biography(PRONOUN_BIO, *NAME, key=next(k for k in range(50) if not permute_biography(
        PRONOUN_BIO, *NAME, k).startswith(FULL + " was born")))  # fmt: skip
    assert "She was born on May 5, 1950" in text  # the old first sentence, now later, says the pronoun
    text = permute_biography(NAME_BIO, *NAME, 0)
    assert text.count(FULL) == 1 and text.split(". ")[0].count(FULL) == 1  # the short name elsewhere
    # nothing refers to the person: no order helps
    assert permute_biography("The sky is blue. Grass is green.", *NAME, 0, max_tries=20) is None


def test_permutation_check_rejects_corrupted_copies():
    text = permute_biography(PRONOUN_BIO, *NAME, 4)
    assert check_permutation(PRONOUN_BIO, text, FULL) is None
    parts = text.removesuffix(".").split(". ")
    assert check_permutation(PRONOUN_BIO, text.replace("Botany", "Zoology"), FULL) is not None  # a fact changed
    assert check_permutation(PRONOUN_BIO, ". ".join(parts[:-1]) + ".", FULL) is not None  # a sentence dropped
    no_name = text.replace(FULL, "She", 1)
    assert "does not name" in check_permutation(PRONOUN_BIO, no_name, FULL)
    assert check_permutation(PRONOUN_BIO, text.replace(FULL, "Bob Bo Cee", 1), FULL) is not None


def bior_record(text, index=0):
    """A bioR biography record as capo-bior writes it: the prompt's record with the model's text."""
    prompt = make_sample("capo", "bioR0-single-N50", "train", 0, index)
    name = prompt["meta"]["name"]
    return {"text": text.replace(FULL, name).replace("Ann", name.split()[0]),
            "meta": {**prompt["meta"], "prompt": prompt["text"]}}  # fmt: skip


def test_records_cli_and_verifier(tmp_path, capsys):
    records = [bior_record(bio, i) for i, bio in enumerate((PRONOUN_BIO, PERSON_BIO, NAME_BIO))]
    records.append(make_sample("capo", "bioS-single-N50", "train", 0, 7))
    permuted, failures = permute_records(records, copies=3, seed=1)
    assert failures == [] and len(permuted) == 12
    assert [p["meta"]["copy"] for p in permuted] == [0, 1, 2] * 4
    assert all(
        p["meta"]["source"] == r["text"] for p, r in zip(permuted, [r for r in records for _ in range(3)], strict=True)
    )
    assert all(verify_capo(p) is None for p in permuted)
    broken = {**permuted[0], "text": permuted[0]["text"].replace("Botany", "Zoology")}
    assert verify_capo(broken) is not None
    prompt_changed = {**permuted[0], "meta": {**permuted[0]["meta"]}}
    prompt_changed["meta"]["prompt"] = prompt_changed["meta"]["prompt"].replace("Please", "Kindly")
    assert verify_capo(prompt_changed) is not None  # the prompt it came from is checked too

    source = tmp_path / "bior.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "permuted.jsonl"
    argv = ["capo-permute", str(source), "--copies", "3", "--seed", "1", "--out", str(out)]
    assert main(argv) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == json.loads(json.dumps(permuted))
    assert "wrote 12 permuted biographies" in capsys.readouterr().out
    assert main(["verify", "capo", str(out)]) == 0 and "valid 12 invalid 0" in capsys.readouterr().out
    out.write_text(out.read_text().replace("Botany", "Zoology", 1))
    assert main(["verify", "capo", str(out)]) == 1 and "valid 11 invalid 1" in capsys.readouterr().out

    with pytest.raises(SystemExit):  # an existing output is never replaced
        main(argv)
    assert "already exists" in capsys.readouterr().err
    hopeless = tmp_path / "hopeless.jsonl"
    hopeless.write_text(json.dumps(bior_record("The sky is blue. Grass is green.")) + "\n")
    strict = ["capo-permute", str(hopeless), "--max-tries", "5", "--on-failure", "error", "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit):
        main(strict)
    assert "could not be permuted" in capsys.readouterr().err and not (tmp_path / "x").exists()
    lenient = ["capo-permute", str(hopeless), "--max-tries", "5", "--out", str(tmp_path / "y")]
    assert main(lenient) == 0 and "0 permuted biographies" in capsys.readouterr().out
    extra = tmp_path / "abbr.jsonl"
    extra.write_text(json.dumps(bior_record("Ann Bo Cee met Prof. Xu. She liked him.")) + "\n")
    assert main(["capo-permute", str(extra), "--abbreviations", "Prof.", "--out", str(tmp_path / "z")]) == 0
    text = json.loads((tmp_path / "z").read_text())["text"]
    assert "met Prof. Xu" in text and len(text.removesuffix(".").split(". ")) == 3  # one sentence, not two
