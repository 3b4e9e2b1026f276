import json
import math
import os
import random
import statistics
import subprocess
import sys
from collections import Counter

import pytest

from data_synthetic_pretrain import GENERATORS, ManoParams, make_sample, mano_sample, verify_mano, write_dataset
from data_synthetic_pretrain.common import BOS, make_words, power_law_size, sample_hash, split_words
from data_synthetic_pretrain.depo import ANSWER, HOP, eval_hops
from data_synthetic_pretrain.generators import sample_line

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_PRESETS = [(g, p) for g, spec in GENERATORS.items() for p in spec.presets]


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("generator, preset", ALL_PRESETS)
def test_every_sample_passes_its_verifier(generator, preset, split):
    for index in range(20 if split == "train" else 3):
        record = make_sample(generator, preset, split, seed=3, index=index)
        assert GENERATORS[generator].verify(record) is None
        if "tokens" in record:  # token tasks; Capo writes {"text", "meta"}
            assert record["tokens"][0] in (BOS, BOS - 1) and len(record["labels"]) == len(record["tokens"])


def test_depo_layout_and_test_split():
    record = make_sample("depo", "depo1-225", "test", seed=0, index=0)
    tokens, labels, meta = record["tokens"], record["labels"], record["meta"]
    assert meta["n"] == 225 and len(meta["queries"]) == 10
    assert {q["k"] for q in meta["queries"]} <= {1, 2, 4, 8}
    hops = [t - HOP for t in tokens if HOP < t < ANSWER]
    assert hops == [q["k"] for q in meta["queries"]]
    # labels are 1 exactly on the answer marker and the answer word of each query
    ones = [t for t, label in zip(tokens, labels, strict=True) if label]
    assert ones.count(ANSWER) == 10 and all(t <= 100 or t == ANSWER for t in ones)
    assert eval_hops(16) == [1, 2, 4, 8, 16] and eval_hops(12) == [1, 2, 4, 8, 12]


def corrupt_last_answer_token(record):
    bad = dict(record, tokens=list(record["tokens"]))
    bad["tokens"][-2 if bad["tokens"][-1] == 9998 else -1] ^= 1
    return bad


@pytest.mark.parametrize("generator, preset", [("depo", "depo2-75"), ("brevo", "brevo1-70"), ("brevo", "brevo2-30")])
def test_verifiers_reject_wrong_answers(generator, preset):
    verify = GENERATORS[generator].verify
    record = make_sample(generator, preset, "test", seed=1, index=0)
    assert verify(corrupt_last_answer_token(record)) is not None
    wrong_labels = dict(record, labels=[0] * len(record["labels"]))
    assert verify(wrong_labels) is not None


def test_brevo_accepts_any_topological_order_and_rejects_a_parent_after_its_child():
    record = make_sample("brevo", "brevo1-110", "test", seed=2, index=0)
    order = record["meta"]["answer"]
    tokens = record["tokens"]
    start = len(tokens) - len(order) - 1
    # the last node is the query and the first is a root of the answer DAG: moving the query first is wrong
    swapped = tokens[:start] + [order[-1]] + order[:-1] + [tokens[-1]]
    assert GENERATORS["brevo"].verify(dict(record, tokens=swapped)) is not None
    # Kahn from the roots with a different tie-break is another valid order
    edges = list(zip(tokens[1 : tokens.index(9997)][0::2], tokens[1 : tokens.index(9997)][1::2], strict=True))
    needed = set(order)
    parents = {v: {p for p, c in edges if c == v and p in needed} for v in needed}
    alt, done = [], set()
    while len(alt) < len(needed):
        ready = sorted(v for v in needed - done if parents[v] <= done)
        alt.append(ready[-1])
        done.add(ready[-1])
    assert GENERATORS["brevo"].verify(dict(record, tokens=tokens[:start] + alt + [tokens[-1]])) is None


def test_depo_node_count_and_hop_distributions_match_the_spec():
    N, draws = 375, 4000
    rng = random.Random(0)
    weights = {n: 1 / (n + math.sqrt(N)) for n in range(3, N + 1)}
    total = sum(weights.values())
    mean = sum(n * w for n, w in weights.items()) / total
    std = math.sqrt(sum((n - mean) ** 2 * w for n, w in weights.items()) / total)
    sample_mean = statistics.mean(power_law_size(rng, N) for _ in range(draws))
    assert abs(mean - 110) < 2  # the mean size of the published generator for N=375
    assert abs(sample_mean - mean) < 4 * std / math.sqrt(draws)
    ks = Counter(q["k"] for i in range(300) for q in make_sample("depo", "depo1-375", "train", 0, i)["meta"]["queries"])
    assert set(ks) == set(range(1, 9))
    expected = sum(ks.values()) / 8
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in ks.values())


def test_brevo_answer_length_and_depth_match_the_spec():
    metas = [make_sample("brevo", "brevo1-110", "train", 0, i)["meta"] for i in range(1500)]
    mean_answer = statistics.mean(len(m["answer"]) for m in metas)
    assert 15 < mean_answer < 21  # spec: mean about 18 nodes for N=110
    depths = Counter(m["depth"] for m in metas)
    assert depths.most_common(1)[0][0] == 2 and max(depths) <= 9


def read_all(paths):
    return b"".join(open(p, "rb").read() for p in paths)


def test_output_is_identical_whatever_the_workers_and_shards(tmp_path):
    one = write_dataset("brevo", "brevo2-40", "train", 120, 7, str(tmp_path / "a"), progress=False)
    many = write_dataset("brevo", "brevo2-40", "train", 120, 7, str(tmp_path / "b"), shards=3, workers=2,
                         progress=False)  # fmt: skip
    assert [os.path.basename(p) for p in many] == [f"brevo2-40_train.chunk.0{j}.jsonl" for j in range(3)]
    assert read_all(one) == read_all(many)
    assert read_all(one) != read_all(write_dataset("brevo", "brevo2-40", "train", 120, 8, str(tmp_path / "c"),
                                                   progress=False))  # fmt: skip


def test_output_loads_with_datasets(tmp_path):
    from datasets import load_dataset

    paths = write_dataset("depo", "depo2-100", "train", 30, 0, str(tmp_path), shards=2, progress=False)
    data = load_dataset("json", data_files=paths, split="train")
    assert len(data) == 30 and set(data.column_names) == {"tokens", "labels", "meta"}


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(preset="depo9-1"), "unknown depo preset 'depo9-1'"),
        (dict(split="dev"), "unknown split 'dev'"),
        (dict(num=0), "--num 0"),
        (dict(num=5, shards=6), "--shards 6"),
        (dict(workers=0), "--workers 0"),
    ],
)
def test_bad_requests_fail_before_writing(tmp_path, kwargs, error):
    args = dict(generator="depo", preset="depo2-75", split="train", num=10, seed=0, out=str(tmp_path / "out"))
    args.update(kwargs)
    with pytest.raises(ValueError, match=error):
        write_dataset(**args, progress=False)
    assert not (tmp_path / "out").exists()


def test_unwritable_or_existing_output_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not a writable folder"):
        write_dataset("depo", "depo2-75", "train", 3, 0, str(blocker / "sub"), progress=False)
    write_dataset("depo", "depo2-75", "train", 3, 0, str(tmp_path / "d"), progress=False)
    before = read_all([tmp_path / "d" / "depo2-75_train.chunk.00.jsonl"])
    with pytest.raises(FileExistsError, match="already exists"):
        write_dataset("depo", "depo2-75", "train", 5, 1, str(tmp_path / "d"), progress=False)
    assert read_all([tmp_path / "d" / "depo2-75_train.chunk.00.jsonl"]) == before
    assert sorted(os.listdir(tmp_path / "d")) == ["depo2-75_train.chunk.00.jsonl"]


def test_cli_generates_and_verifies(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "data_synthetic_pretrain", *args], cwd=REPO, capture_output=True,
                              text=True)  # fmt: skip

    made = cli("depo", "--preset", "depo1-300", "--num", "25", "--seed", "4", "--out", str(tmp_path), "--shards", "2")
    assert made.returncode == 0, made.stderr
    files = sorted(str(p) for p in tmp_path.glob("*.jsonl"))
    checked = cli("verify", "depo", *files)
    assert checked.returncode == 0 and "valid 25 invalid 0" in checked.stdout
    bad = cli("brevo", "--preset", "nope", "--num", "1", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "unknown brevo preset 'nope'" in bad.stderr


@pytest.mark.parametrize(
    "tokens",
    [
        [9999, 20, 5, 5003, 7, 5018, 5013, 24, 5007],  # + 3 (* 18 13) = 7, the published examples
        [9998, 10, 2, 5012, 5009, 14, 5003],
        [9998, 30, 6, 2, 5017, 5, 5012, 5022, 5010, 34, 5019],
        [9999, 30, 2, 2, 5011, 5018, 3, 5009, 5004, 34, 5003],
    ],
)
def test_mano_verifier_accepts_the_reference_layout_and_rejects_wrong_values(tokens):
    verify = GENERATORS["mano"].verify
    record = {"tokens": tokens, "labels": [0] * (len(tokens) - 1) + [1], "meta": {"params": {"mod": 23}}}
    assert verify(record) is None
    assert verify(dict(record, tokens=tokens[:-1] + [tokens[-1] + 1 if tokens[-1] < 5022 else 5000])) is not None


def test_mano_lengths_follow_the_split():
    train = Counter(make_sample("mano", "mano-13", "train", 0, i)["meta"]["l"] for i in range(1300))
    assert set(train) == set(range(1, 14)) and all(abs(c - 100) < 50 for c in train.values())
    test = [make_sample("mano", "mano-13", "test", 0, i) for i in range(20)]
    assert all(len(r["tokens"]) == 2 * 13 + 5 and r["meta"]["l"] == 13 for r in test)


@pytest.mark.parametrize("mini_vocab, min_len, max_len", [(3, 5, 7), (50, 1, 2), (9, 3, 5)])
def test_words_have_uniform_lengths_and_tokens(mini_vocab, min_len, max_len):
    # (9, 3, 5) is too large for the table of all words, so it takes the token-by-token path
    rng = random.Random(0)
    words = [w for _ in range(100) for w in make_words(rng, 40, mini_vocab, min_len, max_len)]
    assert all(len(set(words[i : i + 40])) == 40 for i in range(0, len(words), 40))
    assert split_words([t for w in words for t in w], mini_vocab) == words
    lengths = Counter(len(w) for w in words)
    expected = len(words) / (max_len - min_len + 1)
    assert set(lengths) == set(range(min_len, max_len + 1))
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in lengths.values())
    inner = Counter(t for w in words for t in w[:-1])
    last = Counter(w[-1] - mini_vocab for w in words)
    for counts in (inner, last):
        mean = sum(counts.values()) / mini_vocab
        assert set(counts) == set(range(1, mini_vocab + 1))
        assert all(abs(c - mean) < 5 * math.sqrt(mean) for c in counts.values())


def test_mano_choices_are_uniform():
    tokens = [make_sample("mano", "mano-10", "test", 0, i)["tokens"] for i in range(600)]
    ops = Counter(t for ts in tokens for t in ts[2:-2] if t < 9)
    assert set(ops) == {1, 2, 3, 5, 6, 7}  # + - * and their aliases
    assert all(abs(c - 1000) < 5 * math.sqrt(1000) for c in ops.values())
    leaves = Counter(t for ts in tokens for t in ts[2:-2] if t >= 5000)
    assert set(leaves) == set(range(5000, 5023))
    assert all(abs(c - 6600 / 23) < 5 * math.sqrt(6600 / 23) for c in leaves.values())
    coins = [Counter(ts[i] for ts in tokens) for i in (0, 1, -2)]
    assert all(len(c) == 2 and min(c.values()) > 230 for c in coins)
    # the left subtree's size is uniform: of l=2 expressions, half are "op op . . ." and half "op . op . ."
    train = [make_sample("mano", "mano-10", "train", 1, i) for i in range(3000)]
    shapes = Counter(r["tokens"][3] < 9 for r in train if r["meta"]["l"] == 2)
    assert abs(shapes[True] - shapes[False]) < 5 * math.sqrt(sum(shapes.values()))


def test_mano_division_retries_until_defined():
    params = ManoParams(L=4, ops="asmd")
    records = []
    for i in range(300):
        record = mano_sample(params, sample_hash("mano", "custom", "test", 0, i), "test")
        record["meta"]["params"] = {"mod": 23}
        records.append(record)
    assert all(verify_mano(r) is None for r in records)
    assert {t for r in records for t in r["tokens"][2:-2] if t < 9} == set(range(1, 9))


def test_brevo_dag_law_matches_a_plain_implementation():
    """Edge counts and roots of n=70 DAGs against a direct, slow implementation of the documented process."""

    def plain_dag_edges(rng, n):
        roots = rng.randint(1, (n - 1) // 4 + 1)
        children, edges = [0] * n, 0
        for v in range(roots, n):
            open_nodes = [u for u in range(v) if children[u] < 4]
            for p in rng.sample(open_nodes, rng.randint(1, min(4, len(open_nodes)))):
                children[p] += 1
                edges += 1
        return edges

    ours = [make_sample("brevo", "brevo1-70", "test", 0, i)["meta"]["edges"] for i in range(400)]
    rng = random.Random(0)
    plain = [plain_dag_edges(rng, 70) for _ in range(400)]
    spread = statistics.stdev(plain) * math.sqrt(2 / 400)
    assert abs(statistics.mean(ours) - statistics.mean(plain)) < 5 * spread


@pytest.mark.parametrize("generator, preset", ALL_PRESETS)
def test_written_lines_are_the_records_json(generator, preset):
    for split, index in (("train", 0), ("test", 5)):
        line = sample_line(generator, preset, split, 2, index)
        assert line == json.dumps(make_sample(generator, preset, split, 2, index), separators=(",", ":")) + "\n"
