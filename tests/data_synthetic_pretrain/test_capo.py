import json
import math
import re
from collections import Counter

import pytest

from data_synthetic_pretrain import capo, capo_check, fields, make_sample, write_dataset
from data_synthetic_pretrain.capo_templates import ATTRIBUTES, BIO_TEMPLATES, BIOR_FACTS, QUESTIONS

PRONOUNS = re.compile(r"\b(he|she|him|his|her|hers|they|them|their)\b", re.IGNORECASE)
verify = capo_check.verify_capo


def sample(preset, index, split="train", seed=0):
    return make_sample("capo", preset, split, seed, index)


def chi_square_ok(counts: Counter, categories) -> bool:
    """Pearson's statistic within 5 standard deviations of its mean (dof) under a uniform law."""
    total = sum(counts.values())
    expected = total / len(categories)
    stat = sum((counts.get(c, 0) - expected) ** 2 / expected for c in categories)
    dof = len(categories) - 1
    return abs(stat - dof) < 5 * math.sqrt(2 * dof)


def test_field_lists_have_the_spec_sizes_and_safe_formats(tmp_path):
    lists = {
        "first": fields.first_names(), "middle": fields.middle_names(), "last": fields.last_names(),
        "city": fields.cities(), "university": fields.universities(), "major": fields.majors(),
        "company": fields.companies(),
    }  # fmt: skip
    assert {k: len(v) for k, v in lists.items()} == dict(
        first=400, middle=400, last=1000, city=200, university=300, major=100, company=263
    )
    assert all(len(set(v)) == len(v) for v in lists.values())
    assert all(re.fullmatch(r"[A-Z][A-Za-z' -]+, [A-Z]{2}", c) for c in lists["city"])
    assert all(re.fullmatch(r"[^;]+; [A-Z][A-Za-z' -]+, [A-Z]{2}", c) for c in lists["company"])
    # biographies split into sentences at ". " and are %-formatted: no value may hold ".", "?" or "%"
    assert not any(ch in item for v in lists.values() for item in v for ch in ".?%")
    # the lists are rebuilt exactly from the documented recipe (same Faker word lists)
    from faker.providers.person.en_US import Provider

    female = set(Provider.first_names_female) - set(Provider.first_names_male)
    assert set(lists["first"][:200]) <= female and not set(lists["first"][200:]) & female
    built = fields.build_fields()
    assert built == fields.build_fields()
    fields.write_fields(str(tmp_path))  # the regeneration script writes what build_fields returns
    assert all((tmp_path / f"{name}.txt").read_text().splitlines() == items for name, items in built.items())


def test_names_are_unique_and_people_are_deterministic():
    names = [capo.person(0, i).name for i in range(20000)]
    assert len(set(names)) == len(names)
    assert capo.person(0, 123) == capo.person(0, 123) and capo.person(1, 123) != capo.person(0, 123)
    # the name permutation stays a bijection up to the last possible person (cycle walking)
    tail = [capo._name_code(capo._keys(0).names, i) for i in range(capo.NAME_SPACE - 5000, capo.NAME_SPACE)]
    assert len(set(tail)) == len(tail) and max(tail) < capo.NAME_SPACE


def test_attributes_are_uniform_and_work_city_is_the_headquarters():
    people = [capo.person(7, i) for i in range(30000)]
    assert chi_square_ok(Counter(p.birth_day for p in people), range(1, 29))
    assert chi_square_ok(Counter(p.birth_month for p in people), capo.MONTHS)
    assert chi_square_ok(Counter(p.birth_year for p in people), range(1900, 2100))
    assert chi_square_ok(Counter(p.birth_city for p in people), fields.cities())
    assert chi_square_ok(Counter(p.university for p in people), fields.universities())
    assert chi_square_ok(Counter(p.major for p in people), fields.majors())
    assert chi_square_ok(Counter(p.employer for p in people), [c.split("; ")[0] for c in fields.companies()])
    assert chi_square_ok(Counter(p.first_name for p in people), fields.first_names())
    headquarters = dict(c.split("; ") for c in fields.companies())
    assert all(p.work_city == headquarters[p.employer] for p in people)
    assert all(p.birth_date == f"{p.birth_month} {p.birth_day}, {p.birth_year}" for p in people[:100])
    female = set(fields.first_names()[:200])
    assert all(p.female == (p.first_name in female) for p in people)


def test_templates_are_many_distinct_and_pronoun_free():
    for attribute in ATTRIBUTES:
        templates = BIO_TEMPLATES[attribute]
        assert len(set(templates)) == len(templates) >= 40
        for t in templates:
            assert t.count("{s}") == 1 and t.count("{v}") == 1 and t.endswith(".") and t.count(".") == 1
            assert "?" not in t and not PRONOUNS.search(t.replace("{s}", "X"))


def sentences_of(text):
    return [s + "." for s in text[:-1].split(". ")]


def test_single_bios_use_the_full_name_once_then_the_matching_pronoun():
    skeletons = Counter()
    for i in range(3000):
        record = sample("bioS-single-N10000", i)
        who = capo.person(0, record["meta"]["person"])
        sentences = sentences_of(record["text"])
        assert len(sentences) == 6 and record["text"].count(who.name) == 1 and sentences[0].count(who.name) == 1
        words = [w.lower() for s in sentences[1:] for w in PRONOUNS.findall(s)]
        assert words == ["she" if who.female else "he"] * 5
        for sentence, value in zip(sentences, who.values(), strict=True):  # canonical order
            assert value in sentence
        skeletons[sentences[0].replace(who.name, "{s}").replace(who.birth_date, "{v}")] += 1
    assert set(skeletons) == set(BIO_TEMPLATES["birth_date"])  # every template is drawn
    assert chi_square_ok(skeletons, BIO_TEMPLATES["birth_date"])


def test_fullname_bios_have_no_pronouns_and_permuted_bios_really_permute():
    firsts, orders = Counter(), set()
    for i in range(600):
        record = sample("bioS-multi5-permute-fullname-N10000", i)
        who = capo.person(0, record["meta"]["person"])
        sentences = sentences_of(record["text"])
        assert all(s.count(who.name) == 1 for s in sentences) and not PRONOUNS.search(record["text"])
        stated = [next(a for a, v in zip(ATTRIBUTES, who.values(), strict=True) if v in s) for s in sentences]
        if who.birth_city != who.work_city:
            assert stated == list(record["meta"]["order"]) and sorted(stated) == sorted(ATTRIBUTES)
        firsts[record["meta"]["order"][0]] += 1
        orders.add(tuple(record["meta"]["order"]))
    assert set(firsts) == set(ATTRIBUTES) and chi_square_ok(firsts, ATTRIBUTES)
    assert len(orders) > 300  # 600 draws from 720 orders
    permuted = sample("bioS-multi5-permute-N10000", 1)
    who = capo.person(0, permuted["meta"]["person"])
    first = sentences_of(permuted["text"])[0]
    assert first.count(who.name) == 1 and permuted["text"].count(who.name) == 1


def test_multi_bios_differ_and_repeat_every_m_rounds():
    N = 50
    by_person = {}
    for i in range(6 * N):  # six rounds of multi5
        record = sample(f"bioS-multi5-N{N}", i)
        by_person.setdefault(record["meta"]["person"], []).append((record["meta"]["bio"], record["text"]))
    assert sorted(by_person) == list(range(N))
    for bios in by_person.values():
        assert sorted(b for b, _ in bios) == [0, 0, 1, 2, 3, 4]
        texts = dict(bios)
        assert len(set(texts.values())) == 5  # five different biographies
        assert [t for b, t in bios if b == 0][0] == [t for b, t in bios if b == 0][1]
    test_bios = {sample(f"bioS-multi5-N{N}", i, "test")["meta"]["bio"] for i in range(2 * N)}
    assert test_bios == {5, 6}  # held-out biographies, never in the train split


def test_qa_halves_the_people_and_answers_exactly():
    N = 20
    train = [sample(f"qa-N{N}", i) for i in range(6 * N // 2)]
    test = [sample(f"qa-N{N}", i, "test") for i in range(6 * N // 2)]
    for records, people in ((train, range(10)), (test, range(10, 20))):
        pairs = [(r["meta"]["person"], r["meta"]["attribute"]) for r in records]
        assert sorted(pairs) == sorted((p, a) for p in people for a in ATTRIBUTES)  # one round = each pair once
        for r in records:
            who = capo.person(0, r["meta"]["person"])
            answer = getattr(who, r["meta"]["attribute"])
            question = QUESTIONS[r["meta"]["attribute"]].replace("{s}", who.name)
            assert r["text"] == f"{question} Answer: {answer}" and r["meta"]["answer"] == answer
            assert r["meta"]["prompt"] == f"{question} Answer:" and verify(r) is None


def test_bior_prompts_state_every_fact_once_in_varied_order():
    used, orders = set(), set()
    for i in range(400):
        record = sample("bioR1-multi5-N1000", i)
        who, text = capo.person(0, record["meta"]["person"]), record["text"]
        instruction, facts = text.split("sentences. ")
        assert instruction.startswith(f"Compose a {record['meta']['words']}-word biography of {who.name} from the")
        assert 50 <= record["meta"]["words"] <= 199
        values = dict(zip(ATTRIBUTES, who.values(), strict=True))
        rendered = {p.format(**values): (g, p) for g, pool in BIOR_FACTS.items() for p in pool}
        stated = [rendered[s + "."] for s in facts[:-1].split(". ")]
        assert sorted(g for g, _ in stated) == sorted(BIOR_FACTS)  # each fact once
        used.update(p for _, p in stated)
        orders.add(tuple(g for g, _ in stated))
    assert len(used) == sum(len(pool) for pool in BIOR_FACTS.values()) == 13  # every phrasing drawn
    assert len(orders) == 24  # every order of the four facts
    plain = sample("bioR0-single-N1000", 0)
    assert plain["text"].startswith("Please write a biography of about ") and "None" not in plain["text"]


def check_across(records) -> list:
    """The reasons `verify capo` gives for each record, in order: alone, then against all records before it."""
    statements, reasons = capo_check.Statements(), []
    for i, record in enumerate(records):
        reason, key, facts = capo_check.statements(record)
        reasons.append(reason if reason is not None else statements.add(key, facts, f"record {i}"))
    return reasons


def test_verifier_accepts_generated_samples_and_never_calls_the_generator(monkeypatch):
    records = [
        sample(preset.replace("N100k", "N300"), i, split)
        for preset in capo.PRESET_EXAMPLES
        for split in ("train", "test")
        for i in range(40)
    ]
    monkeypatch.setattr(capo, "person", None)  # the checks read the text, the field lists and the wording only
    monkeypatch.setattr(capo, "biography", None)
    monkeypatch.setattr(capo, "bior_prompt", None)
    assert all(verify(r) is None for r in records)
    # every record also agrees with every other record about the same person (bioS, QA and bioR of seed 0, N300)
    assert check_across(records) == [None] * len(records)


def test_verifier_rejects_corrupted_records():
    record = sample("bioS-multi5-N300", 4)
    who = capo.person(0, record["meta"]["person"])
    second_round = (sample("bioS-multi5-N300", i) for i in range(300, 600))
    other_bio = next(r for r in second_round if r["meta"]["person"] == who.index)  # the person's next biography
    assert other_bio["text"] != record["text"]
    wrong_pronoun = "He" if who.female else "She"

    def corrupted(**changes):
        return {**record, **changes}

    def text_with(old, new):
        assert old in record["text"]
        return corrupted(text=record["text"].replace(old, new, 1))

    # wrong on their own: not a template, a value outside the field lists, a contradiction inside the biography
    year = str(who.birth_year)
    assert "not a first, middle and last name" in verify(corrupted(meta={**record["meta"], "name": "Ann Bee Cee"}))
    assert verify(text_with(year, "2150")) is not None  # years run 1900-2099
    assert verify(text_with(f" {who.birth_day}, ", " 30, ")) is not None  # days run 1-28
    assert verify(text_with(f"{who.pronoun} ", f"{wrong_pronoun} ")) is not None
    assert verify(text_with(who.major, "Alchemy")) is not None
    other = next(c for c in fields.companies() if not c.endswith(who.work_city))
    assert "headquarters" in verify(text_with(who.employer, other.split("; ")[0]))
    sentences = sentences_of(record["text"])
    swapped = " ".join([sentences[0], sentences[2], sentences[1], *sentences[3:]])
    assert verify(corrupted(text=swapped)) is not None  # order fixed without -permute
    assert verify(corrupted(meta={**record["meta"], "person": 300})) is not None
    assert verify(corrupted(meta={**record["meta"], "bio": 5})) is not None  # a held-out number in the train split
    assert verify(text_with(".", ",")) is not None

    # right on their own, wrong next to the person's other records: a valid but different year or city, a QA
    # answer that differs from the biographies, a name used for two people
    city = next(c for c in fields.cities() if c != who.birth_city)
    for wrong in (text_with(year, str(who.birth_year % 2099 + 1)), text_with(who.birth_city, city)):
        assert verify(wrong) is None
        assert check_across([other_bio, wrong])[1] is not None and check_across([wrong, other_bio])[1] is not None
    qas = (sample("qa-N300", i) for i in range(900))
    qa = next(q for q in qas if q["meta"]["person"] == who.index and q["meta"]["attribute"] == "birth_city")
    assert check_across([record, qa]) == [None, None]
    wrong_qa = {**qa, "text": qa["text"].replace(who.birth_city, city), "meta": {**qa["meta"], "answer": city}}
    assert verify(wrong_qa) is None and "here but" in check_across([record, wrong_qa])[1]
    stranger = sample("bioS-multi5-N300", 5)
    borrowed = stranger["text"].replace(stranger["meta"]["name"], who.name)
    borrowed = {**stranger, "text": borrowed, "meta": {**stranger["meta"], "name": who.name}}
    assert verify(borrowed) is None and "belongs to person" in check_across([record, borrowed])[1]

    qa = sample("qa-N300", 3)
    assert verify({**qa, "text": qa["text"][:-1]}) is not None
    assert verify({**qa, "meta": {**qa["meta"], "split": "test"}}) is not None  # person from the other half
    bior = sample("bioR0-multi5-N300", 3)
    who = capo.person(0, bior["meta"]["person"])
    assert verify({**bior, "text": bior["text"].replace(who.major, "Alchemy")}) is not None


def test_reverse_md_writes_day_of_month_and_is_verified_in_that_format():
    for i in range(20):
        record = sample("bioS-multi2-permute-reverse-md-N50", i)
        who = capo.person(0, record["meta"]["person"])
        assert f"{who.birth_day} of {who.birth_month}, {who.birth_year}" in record["text"]
        assert who.birth_date not in record["text"] and verify(record) is None
        plain = sample("bioS-multi2-permute-N50", i)
        assert check_across([plain, record]) == [None, None]  # the same date, in the other format
    record = sample("bioS-single-reverse-md-N50", 0)
    who = capo.person(0, record["meta"]["person"])
    reversed_date = f"{who.birth_day} of {who.birth_month}, {who.birth_year}"
    assert verify({**record, "text": record["text"].replace(reversed_date, who.birth_date)}) is not None
    assert capo.PRESETS["bioS-multi5-fullname-reverse-md-N1k"] == capo.CapoParams(
        "bioS", 1000, 5, fullname=True, reverse_md=True
    )


@pytest.mark.parametrize(
    "preset",
    [
        "bioS-N100",
        "bioS-single-N0",
        "qa-multi5-N100",
        "bioR2-single-N100",
        "bioR0-single-permute-N100",
        "x",
        "bioS-single-reverse-md-permute-N100",
        "qa-reverse-md-N100",
    ],  # fmt: skip
)
def test_bad_preset_names_are_unknown(preset, tmp_path):
    with pytest.raises(ValueError, match=f"unknown capo preset '{preset}'"):
        write_dataset("capo", preset, "train", 5, 0, str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "preset, error", [("bioS-single-N1", "Capo N=1"), ("qa-N200M", "distinct full names"), ("bioS-multi0-N9", None)]
)
def test_impossible_people_counts_fail_before_writing(preset, error, tmp_path):
    with pytest.raises(ValueError, match=error or "unknown capo preset"):
        write_dataset("capo", preset, "train", 5, 0, str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


def test_preset_names_parse_into_params():
    assert capo.PRESETS["bioS-multi5-permute-fullname-N2k"] == capo.CapoParams("bioS", 2000, 5, True, True)
    assert capo.PRESETS["qa-N1M"] == capo.CapoParams("qa", 1_000_000)
    assert capo.PRESETS["bioR1-single-N300"] == capo.CapoParams("bioR", 300, mode=1)
    assert list(capo.PRESETS) == list(capo.PRESET_EXAMPLES) and "bioS-multi3-N7" in capo.PRESETS


def read_all(paths):
    return b"".join(open(p, "rb").read() for p in paths)


def test_output_is_identical_whatever_the_workers_and_loads_with_datasets(tmp_path):
    from datasets import load_dataset

    preset = "bioS-multi5-permute-N40"
    one = write_dataset("capo", preset, "train", 150, 3, str(tmp_path / "a"), progress=False)
    many = write_dataset("capo", preset, "train", 150, 3, str(tmp_path / "b"), shards=3, workers=2, progress=False)
    assert read_all(one) == read_all(many)
    data = load_dataset("json", data_files=many, split="train")
    assert len(data) == 150 and {"text", "meta"} <= set(data.column_names)
    assert data[0]["text"] == json.loads(read_all(one).split(b"\n")[0])["text"]


def test_cli_generates_and_verifies(tmp_path, capsys):
    from data_synthetic_pretrain.__main__ import main

    assert (
        main(["capo", "--preset", "qa-N30", "--split", "test", "--num", "90", "--out", str(tmp_path), "--shards", "2"])
        == 0
    )
    assert main(["verify", "capo", *sorted(str(p) for p in tmp_path.glob("*.jsonl"))]) == 0
    assert "valid 90 invalid 0" in capsys.readouterr().out
    record = json.loads((tmp_path / "qa-N30_test.chunk.00.jsonl").read_text().splitlines()[0])
    (tmp_path / "bad.jsonl").write_text(json.dumps({**record, "text": record["text"] + "x"}) + "\n")
    assert main(["verify", "capo", str(tmp_path / "bad.jsonl")]) == 1
    assert "valid 0 invalid 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["capo", "--preset", "bioS-N5", "--num", "1", "--out", str(tmp_path / "x")])
    assert "unknown capo preset 'bioS-N5'" in capsys.readouterr().err


def test_cli_reverse_md_and_the_check_across_files(tmp_path, capsys):
    from data_synthetic_pretrain.__main__ import main

    bios, qa = tmp_path / "bios", tmp_path / "qa"
    assert main(["capo", "--preset", "bioS-multi2-reverse-md-N30", "--num", "60", "--out", str(bios)]) == 0
    assert main(["capo", "--preset", "qa-N30", "--num", "90", "--out", str(qa)]) == 0
    bio_file, qa_file = bios / "bioS-multi2-reverse-md-N30_train.chunk.00.jsonl", qa / "qa-N30_train.chunk.00.jsonl"
    records = [json.loads(line) for line in bio_file.read_text().splitlines()]
    assert all(re.search(r"\b\d{1,2} of [A-Z][a-z]+, \d{4}\b", r["text"]) for r in records)
    capsys.readouterr()
    assert main(["verify", "capo", str(bio_file), str(qa_file)]) == 0
    assert "valid 150 invalid 0" in capsys.readouterr().out
    # one biography gives its person another (valid) birth city: fine alone, a contradiction next to the others
    record = records[40]
    who = capo.person(0, record["meta"]["person"])
    city = next(c for c in fields.cities() if c != who.birth_city)
    changed = tmp_path / "changed.jsonl"
    changed.write_text(json.dumps({**record, "text": record["text"].replace(who.birth_city, city)}) + "\n")
    assert main(["verify", "capo", str(changed)]) == 0
    capsys.readouterr()
    assert main(["verify", "capo", str(bio_file), str(changed)]) == 1
    captured = capsys.readouterr()
    assert "valid 60 invalid 1" in captured.out and f"birth_city is '{city}' here but" in captured.err


def char_tokenizer():
    """A character-level tokenizer built offline: printable ASCII plus <pad>/<bos>/<eos>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<pad>", "<bos>", "<eos>", "<unk>"] + [chr(c) for c in range(32, 127)] + ["\n"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def test_bior_generation_attaches_each_output_to_its_prompt(tmp_path):
    import torch

    from huggingface import LlamaCanonConfig, LlamaCanonForCausalLM

    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    config = LlamaCanonConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.3,
    )  # fmt: skip
    model = LlamaCanonForCausalLM(config).eval()
    prompts = [sample("bioR0-single-N500", i) for i in range(3)] + [sample("bioR1-multi5-N500", 0)]
    greedy = dict(max_new_tokens=6, temperature=0, progress=False)
    batched = capo.generate_bior(prompts, model, tokenizer, batch_size=4, **greedy)
    alone = [capo.generate_bior([p], model, tokenizer, **greedy)[0] for p in prompts]
    assert [b["text"] for b in batched] == [a["text"] for a in alone]  # left padding does not mix up rows
    assert len({b["text"] for b in batched}) > 1
    for prompt, written in zip(prompts, batched, strict=True):
        assert written["meta"]["person"] == prompt["meta"]["person"] and written["meta"]["prompt"] == prompt["text"]
    with pytest.raises(ValueError, match="not a Capo bioR prompt"):
        capo.generate_bior([sample("qa-N500", 0)], model, tokenizer)

    prompt_file, out = tmp_path / "prompts.jsonl", tmp_path / "bior.jsonl"
    prompt_file.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    assert capo.write_bior([str(prompt_file)], model, str(out), tokenizer=tokenizer, **greedy) == 4
    assert [json.loads(line) for line in out.read_text().splitlines()] == batched
    with pytest.raises(FileExistsError, match="already exists"):
        capo.write_bior([str(prompt_file)], model, str(out), tokenizer=tokenizer, **greedy)
