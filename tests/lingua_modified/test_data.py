"""The training data pipeline: exact resumption, rank assignment, packing, record forms, errors, source weights."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lingua.data import (
    ChunkReader,
    DataArgs,
    Document,
    SourceMixer,
    assign_chunks,
    build_dataloader_from_args,
    init_dataloader_state_from_args,
    iter_validation_documents,
)
from lingua.tokenizer import TokenizerArgs, build_tokenizer

BOS, EOS = 256, 257  # the bytes tokenizer's


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line if isinstance(line, str) else json.dumps(line) + "\n" for line in lines)


def text_records(n, tag):
    # lengths from a few bytes to several samples long, so documents both share samples and span them
    return [{"text": f"{tag}{i}:" + "xyz"[i % 3] * (i * 7 % 53), "id": i} for i in range(n)]


def token_records(n, low, vocab=300):
    rng = np.random.default_rng(low)
    records = []
    for _ in range(n):
        length = int(rng.integers(1, 12))
        tokens = rng.integers(low, vocab, length).tolist()
        records.append({"tokens": tokens, "labels": rng.integers(0, 2, length).tolist()})
    return records


@pytest.fixture
def mixed_root(tmp_path):
    """Three sources: text in two chunks, pre-tokenized with labels, and text again; ids fit the bytes vocab."""
    write_lines(tmp_path / "alpha" / "a.chunk.00.jsonl", text_records(30, "A"))
    write_lines(tmp_path / "alpha" / "a.chunk.01.jsonl", text_records(25, "B"))
    write_lines(tmp_path / "beta" / "b.chunk.00.jsonl", token_records(40, 0, vocab=258))
    write_lines(tmp_path / "gamma" / "c.chunk.00.jsonl", text_records(10, "C"))
    return str(tmp_path)


def make_args(root, **overrides):
    settings = dict(
        root_dir=root,
        sources={"alpha": 2.0, "beta": 1.0, "gamma": 0.5},
        batch_size=2,
        seq_len=16,
        n_views=2,
        prefetch_size=3,
        load_async=False,
    )
    settings.update(overrides)
    return DataArgs(**settings)


def take(args, state, n):
    with build_dataloader_from_args(args, state) as batches:
        return [next(batches) for _ in range(n)]


def assert_same(run_a, run_b):
    assert len(run_a) == len(run_b)
    for (tokens_a, mask_a, state_a), (tokens_b, mask_b, state_b) in zip(run_a, run_b, strict=True):
        np.testing.assert_array_equal(tokens_a, tokens_b)
        np.testing.assert_array_equal(mask_a, mask_b)
        assert state_a == state_b


def mid_document(state):
    return state["it_state"]["start_token"] > 0


@pytest.mark.parametrize("n_views", [2, 3])
def test_exact_resume_sync_at_every_batch(mixed_root, n_views):
    args = make_args(mixed_root, n_views=n_views)
    run = take(args, init_dataloader_state_from_args(args, 0, 1), 24)
    tokens, mask, _ = run[0]
    assert tokens.shape == mask.shape == (2, 16, n_views) and tokens.dtype == np.int64 and mask.dtype == np.bool_
    for k in range(len(run) - 1):
        state = json.loads(json.dumps(run[k][2]))  # what a checkpoint stores
        assert_same(take(args, state, min(5, len(run) - k - 1)), run[k + 1 : k + 6])
    states = [state for _, _, state in run]
    assert any(s["seq_idx"] > 0 and mid_document(s) for s in states)  # mid-round and mid-document saves
    assert any(s["seq_idx"] == 0 for s in states)  # and at round boundaries
    assert {name for s in states for name in s["it_state"]["it_state"]["it_state"]["source_to_state"]} == {
        "alpha",
        "beta",
        "gamma",
    }


def test_exact_resume_across_many_tiny_documents(tmp_path):
    """n_views = 4 with 1-3 token documents: the resume point lies several documents back."""
    records = [{"tokens": list(range(i % 3 + 1)), "labels": [1] * (i % 3 + 1)} for i in range(37)]
    write_lines(tmp_path / "tiny" / "t.chunk.00.jsonl", records)
    args = make_args(str(tmp_path), sources={"tiny": 1.0}, n_views=4, seq_len=5, batch_size=1, prefetch_size=2)
    run = take(args, init_dataloader_state_from_args(args, 0, 1), 30)
    for k in range(len(run) - 1):
        assert_same(take(args, run[k][2], min(3, len(run) - k - 1)), run[k + 1 : k + 4])


def test_exact_resume_async_matches_sync(mixed_root):
    args = make_args(mixed_root)
    sync_run = take(args, init_dataloader_state_from_args(args, 0, 1), 14)
    args.load_async = True
    assert_same(take(args, init_dataloader_state_from_args(args, 0, 1), 14), sync_run)
    saved = next(k for k, (_, _, state) in enumerate(sync_run) if state["seq_idx"] > 0 and mid_document(state))
    assert_same(take(args, sync_run[saved][2], 14 - saved - 1), sync_run[saved + 1 :])


def stream_of(records, add_bos=True, add_eos=True):
    """The token stream and mask the loader should pack, computed independently of the loader."""
    tokens, mask = [], []
    for record in records:
        if "tokens" in record:
            tokens += record["tokens"]
            mask += [bool(x) for x in record.get("labels", [1] * len(record["tokens"]))]
        else:
            piece = [BOS] * add_bos + list(record["text"].encode("utf-8")) + [EOS] * add_eos
            tokens += piece
            mask += [True] * len(piece)
    return np.array(tokens), np.array(mask)


@pytest.mark.parametrize(("n_views", "add_bos", "add_eos"), [(2, True, True), (3, False, True), (1, True, False)])
def test_packing_views_and_specials(tmp_path, n_views, add_bos, add_eos):
    records = text_records(20, "D")
    write_lines(tmp_path / "s" / "x.chunk.00.jsonl", records)
    seq_len = 16
    # one slot in the shuffle buffer: samples come in stream order
    args = make_args(
        str(tmp_path), sources={"s": 1}, n_views=n_views, seq_len=seq_len, batch_size=1, prefetch_size=1,
        add_bos=add_bos, add_eos=add_eos,
    )  # fmt: skip
    run = take(args, init_dataloader_state_from_args(args, 0, 1), 60)
    stream, _ = stream_of(records * 3, add_bos, add_eos)  # the file is read again from its start at the end
    for i, (tokens, mask, _) in enumerate(run):
        for view in range(n_views):
            np.testing.assert_array_equal(tokens[0, :, view], stream[i * seq_len + view : (i + 1) * seq_len + view])
        assert mask.all()
    assert 60 * seq_len > len(stream) // 3  # the run crossed the end of the file


def test_shuffle_buffer_serves_a_permutation_of_consecutive_samples(mixed_root):
    args = make_args(mixed_root, prefetch_size=4, batch_size=3)
    shuffled = take(args, init_dataloader_state_from_args(args, 0, 1), 4)
    args.prefetch_size, args.batch_size = 1, 1
    in_order = take(args, init_dataloader_state_from_args(args, 0, 1), 12)
    samples = sorted(tuple(t.ravel()) for tokens, _, _ in shuffled for t in tokens)
    assert samples == sorted(tuple(tokens.ravel()) for tokens, _, _ in in_order)
    assert [tuple(t.ravel()) for tokens, _, _ in shuffled for t in tokens] != [
        tuple(tokens.ravel()) for tokens, _, _ in in_order
    ]


def test_token_records_and_labels_become_the_mask(tmp_path):
    records = token_records(50, 3, vocab=9999)
    records[4]["text"] = "a readable rendering"  # "tokens" wins over "text"
    del records[7]["labels"]  # labels are optional: all trained on
    write_lines(tmp_path / "syn" / "s.chunk.00.jsonl", records)
    args = make_args(
        str(tmp_path), sources={"syn": 1}, batch_size=1, prefetch_size=1, seq_len=8,
        tokenizer=TokenizerArgs(name="tokens", vocab_size=10000),
    )  # fmt: skip
    run = take(args, init_dataloader_state_from_args(args, 0, 1), 20)
    stream, mask = stream_of(records)  # records' tokens verbatim: no BOS/EOS added
    for i, (tokens, batch_mask, _) in enumerate(run):
        for view in range(2):
            np.testing.assert_array_equal(tokens[0, :, view], stream[i * 8 + view : (i + 1) * 8 + view])
            np.testing.assert_array_equal(batch_mask[0, :, view], mask[i * 8 + view : (i + 1) * 8 + view])
    assert not np.concatenate([m[..., 1].ravel() for _, m, _ in run]).all()


def test_rank_assignment_unit():
    chunks = [f"c{i}" for i in range(5)]
    assert assign_chunks(chunks, 0, 2) == (["c0", "c2", "c4"], 1, 0)
    assert assign_chunks(chunks, 1, 2) == (["c1", "c3"], 1, 0)
    assert assign_chunks(chunks[:2], 3, 4) == (["c1"], 2, 1)
    assert assign_chunks(chunks[:1], 2, 3) == (["c0"], 3, 2)
    with pytest.raises(ValueError, match="3 chunk files .* cannot be shared evenly by 4 data-parallel ranks"):
        assign_chunks(chunks[:3], 0, 4)


def lines_read_by(args, rank, world_size, source):
    """Every record one pass of this rank's reader yields."""
    state = init_dataloader_state_from_args(args, rank, world_size)
    reader_state = state["it_state"]["it_state"]["it_state"]["source_to_state"][source]
    reader = ChunkReader(
        reader_state["file_paths"], reader_state["block_size"], reader_state["offset"],
        convert=lambda record: Document([record["id"]], None, None), strict=False, one_pass=True,
    )  # fmt: skip
    records = []
    try:
        while True:
            records.append(reader.next_document().tokens[0])
    except StopIteration:
        return reader_state["file_paths"], records
    finally:
        reader.close()


@pytest.mark.parametrize(("n_chunks", "world_size"), [(5, 2), (3, 3), (2, 4), (1, 3)])
def test_ranks_split_every_line_without_overlap(tmp_path, n_chunks, world_size):
    ids = iter(range(10_000))
    for j in reversed(range(n_chunks)):  # created out of name order: the assignment sorts by name
        write_lines(tmp_path / "s" / f"part.chunk.{j:02d}.jsonl", [{"text": "x", "id": next(ids)} for _ in range(7)])
    args = make_args(str(tmp_path), sources={"s": 1})
    seen = []
    for rank in range(world_size):
        files, records = lines_read_by(args, rank, world_size, "s")
        assert files == sorted(files) and all(os.path.isabs(f) for f in files)
        assert records
        seen += records
    assert sorted(seen) == list(range(7 * n_chunks))  # every line, each by exactly one rank


def test_ranks_get_different_data(mixed_root):
    args = make_args(mixed_root)
    first = take(args, init_dataloader_state_from_args(args, 0, 2), 2)
    second = take(args, init_dataloader_state_from_args(args, 1, 2), 2)
    assert not np.array_equal(first[0][0], second[0][0])
    assert_same(take(args, init_dataloader_state_from_args(args, 0, 2), 2), first)  # deterministic


MALFORMED = [
    {"text": "good one"},
    "this is not JSON\n",
    "[1, 2, 3]\n",
    {"title": "no text"},
    {"tokens": [1, 2.5]},
    {"tokens": [1, 2], "labels": [1]},
    "\n",
    '{"text": "lone surrogate \\ud800"}\n',
    {"text": "good two"},
]


def test_malformed_lines_are_skipped_counted_and_logged(tmp_path, caplog):
    path = tmp_path / "m" / "m.chunk.00.jsonl"
    write_lines(path, MALFORMED)
    args = make_args(str(tmp_path), sources={"m": 1}, batch_size=1, prefetch_size=1, seq_len=8)
    with caplog.at_level(logging.WARNING, logger="lingua.data"):
        run = take(args, init_dataloader_state_from_args(args, 0, 1), 3)
    good = stream_of([MALFORMED[0], MALFORMED[-1]])[0]
    np.testing.assert_array_equal(run[0][0][0, :, 0], good[:8])
    logged = [record.getMessage() for record in caplog.records]
    for line in (2, 3, 4, 5, 6, 7, 8):
        assert any(message.startswith(f"{path}:{line}: skipped malformed line") for message in logged), line
    # the count travels in the state (as of the point the state replays from: batch 2 starts in "good two")
    reader_state = run[-1][2]["it_state"]["it_state"]["it_state"]["source_to_state"]["m"]
    assert reader_state["skipped"] == 7


def test_malformed_line_is_an_error_when_strict(tmp_path):
    path = tmp_path / "m" / "m.chunk.00.jsonl"
    write_lines(path, MALFORMED)
    args = make_args(str(tmp_path), sources={"m": 1}, error_on_malformed=True)
    with pytest.raises(ValueError, match=f"{path}:2: malformed line"):
        take(args, init_dataloader_state_from_args(args, 0, 1), 1)


def test_async_loader_reports_the_worker_error(tmp_path):
    """A data error in the background process reaches training as the same one-line error."""
    path = tmp_path / "m" / "m.chunk.00.jsonl"
    write_lines(path, MALFORMED)
    args = make_args(str(tmp_path), sources={"m": 1}, error_on_malformed=True, load_async=True)
    with pytest.raises(ValueError, match=f"^{path}:2: malformed line"):
        take(args, init_dataloader_state_from_args(args, 0, 1), 1)


def test_async_loader_notices_a_dead_worker(mixed_root):
    args = make_args(mixed_root, load_async=True)
    with build_dataloader_from_args(args, init_dataloader_state_from_args(args, 0, 1)) as batches:
        next(batches)
        batches.process.kill()
        batches.process.join()
        with pytest.raises(RuntimeError, match="data loader process quit unexpectedly"):
            for _ in range(100):  # what it queued before dying is still served
                next(batches)


def test_token_outside_vocabulary_is_an_error(tmp_path):
    path = tmp_path / "syn" / "s.chunk.00.jsonl"
    write_lines(path, [{"tokens": [9999, 5]}, {"tokens": [9999, 10000]}])
    args = make_args(str(tmp_path), sources={"syn": 1}, tokenizer=TokenizerArgs(name="tokens"))
    with pytest.raises(ValueError, match=f"{path}:2: token id 10000 is outside the tokenizer's vocabulary 0..9999"):
        take(args, init_dataloader_state_from_args(args, 0, 1), 1)


def test_a_source_without_usable_lines_is_an_error(tmp_path):
    write_lines(tmp_path / "bad" / "b.chunk.00.jsonl", ["nope\n", "{}\n"])
    args = make_args(str(tmp_path), sources={"bad": 1})
    with pytest.raises(ValueError, match="no usable line in a whole pass"):
        take(args, init_dataloader_state_from_args(args, 0, 1), 1)


def test_missing_folders_and_files_are_clear_errors(tmp_path, mixed_root):
    with pytest.raises(FileNotFoundError, match="data.root_dir=.*is not a folder"):
        init_dataloader_state_from_args(make_args(str(tmp_path / "nowhere")), 0, 1)
    with pytest.raises(FileNotFoundError, match="data source 'delta': .*delta is not a folder"):
        init_dataloader_state_from_args(make_args(mixed_root, sources={"alpha": 1, "delta": 1}), 0, 1)
    os.makedirs(os.path.join(mixed_root, "empty"))
    write_lines(os.path.join(mixed_root, "empty", "x.val.jsonl"), [{"text": "only validation"}])
    with pytest.raises(FileNotFoundError, match=r"data source 'empty': no \*.chunk.\*.jsonl files"):
        init_dataloader_state_from_args(make_args(mixed_root, sources={"empty": 1}), 0, 1)
    with pytest.raises(ValueError, match="data.sources is empty"):
        init_dataloader_state_from_args(make_args(mixed_root, sources={}), 0, 1)
    with pytest.raises(ValueError, match="data.sources.alpha=-1"):
        init_dataloader_state_from_args(make_args(mixed_root, sources={"alpha": -1}), 0, 1)
    with pytest.raises(ValueError, match="data.seq_len=0"):
        init_dataloader_state_from_args(make_args(mixed_root, seq_len=0), 0, 1)


def test_resume_under_other_settings_is_an_error(mixed_root):
    args = make_args(mixed_root)
    state = init_dataloader_state_from_args(args, 0, 1)
    with pytest.raises(ValueError, match="data.batch_size=4 but the saved loader state has 2"):
        take(make_args(mixed_root, batch_size=4), state, 1)
    os.remove(os.path.join(mixed_root, "gamma", "c.chunk.00.jsonl"))
    with pytest.raises(FileNotFoundError, match="c.chunk.00.jsonl .* is missing"):
        take(args, state, 1)


def test_source_weights_set_the_document_proportions(mixed_root):
    weights = {"alpha": 3.0, "beta": 1.0, "gamma": 0.0}
    state = init_dataloader_state_from_args(make_args(mixed_root, sources=weights), 0, 1)
    mixer_state = state["it_state"]["it_state"]["it_state"]
    readers = {
        name: ChunkReader.from_state(
            reader_state, lambda record: Document([int("tokens" in record)], None, None), False
        )
        for name, reader_state in mixer_state["source_to_state"].items()
    }
    mixer = SourceMixer(mixed_root, readers, weights, mixer_state["rng_state"])
    draws = 4000
    from_beta = sum(mixer.next_document().tokens[0] for _ in range(draws))  # only beta holds tokens records
    mixer.close()
    expected, sigma = draws / 4, (draws * 0.25 * 0.75) ** 0.5
    assert abs(from_beta - expected) < 4 * sigma


def test_validation_documents(tmp_path):
    records = [{"text": "v" * (i * 5)} for i in range(1, 8)]
    write_lines(tmp_path / "s" / "s.val.jsonl", records)
    tokenizer = build_tokenizer("bytes")
    mine = list(iter_validation_documents(str(tmp_path), "s", tokenizer, rank=1, world_size=2))
    assert [d.n_chars for d in mine] == [10, 20, 30]  # lines 1, 3, 5 (0-based) go to rank 1 of 2
    everything = list(iter_validation_documents(str(tmp_path), "s", tokenizer, max_docs=5))
    assert len(everything) == 5
    document = everything[4]
    assert document.tokens.tolist() == [BOS, *b"v" * 25, EOS]
    windows = list(document.windows(seq_len=8))
    assert all(len(tokens) <= 9 for tokens, _ in windows)
    targets = np.concatenate([tokens[1:] for tokens, _ in windows])
    np.testing.assert_array_equal(targets, document.tokens[1:])  # every token after the first, once
    write_lines(tmp_path / "t" / "t.chunk.00.jsonl", records)
    with pytest.raises(FileNotFoundError, match=r"data source 't': no \*.val.jsonl files"):
        next(iter_validation_documents(str(tmp_path), "t", tokenizer))


documents = st.lists(st.integers(0, 12), min_size=1, max_size=12).filter(any)  # token counts, some empty


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.tuples(documents, documents),
    weights=st.tuples(st.floats(0.1, 5), st.floats(0, 5)),
    seq_len=st.integers(1, 9),
    n_views=st.integers(1, 4),
    batch_size=st.integers(1, 3),
    prefetch_size=st.integers(1, 3),
    add_bos=st.booleans(),
)
def test_exact_resume_property(
    tmp_path_factory, lengths, weights, seq_len, n_views, batch_size, prefetch_size, add_bos
):
    """Any settings, any batch: the state it comes with resumes into exactly the batches that followed it."""
    root = tmp_path_factory.mktemp("data")
    # source "t": text of the given lengths; source "k": labelled token records of the given lengths
    write_lines(root / "t" / "t.chunk.00.jsonl", [{"text": "ab" * (n // 2) + "c" * (n % 2)} for n in lengths[0]])
    write_lines(
        root / "k" / "k.chunk.00.jsonl",
        [{"tokens": list(range(i, i + n)), "labels": [j % 2 for j in range(n)]} for i, n in enumerate(lengths[1])],
    )
    args = make_args(
        str(root), sources={"t": weights[0], "k": weights[1]}, seq_len=seq_len, n_views=n_views,
        batch_size=batch_size, prefetch_size=prefetch_size, add_bos=add_bos, add_eos=False,
    )  # fmt: skip
    run = take(args, init_dataloader_state_from_args(args, 0, 1), 12)
    for k in range(len(run) - 1):
        assert_same(take(args, run[k][2], min(3, len(run) - k - 1)), run[k + 1 : k + 4])


ORPHAN_SCRIPT = """
import sys, time
from lingua.data import DataArgs, build_dataloader_from_args, init_dataloader_state_from_args

if __name__ == "__main__":
    args = DataArgs(root_dir=sys.argv[1], sources={"s": 1}, seq_len=4, batch_size=1, prefetch_size=1)
    with build_dataloader_from_args(args, init_dataloader_state_from_args(args, 0, 1)) as batches:
        next(batches)
        print(batches.process.pid, flush=True)
        time.sleep(600)
"""


def test_loader_process_exits_when_the_trainer_is_killed(tmp_path):
    write_lines(tmp_path / "s" / "s.chunk.00.jsonl", [{"text": "some text"}])
    script = tmp_path / "trainer.py"
    script.write_text(ORPHAN_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "lingua_modified"))
    trainer = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    loader_pid = int(trainer.stdout.readline())
    trainer.kill()  # SIGKILL: no clean-up runs in the trainer
    trainer.wait()
    trainer.stdout.close()
    deadline = time.monotonic() + 30
    try:
        while process_running(loader_pid):
            assert time.monotonic() < deadline, "the loader process outlived its trainer"
            time.sleep(0.05)
    finally:
        if process_running(loader_pid):
            os.kill(loader_pid, signal.SIGKILL)


def process_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited; nobody reaped it yet
    except FileNotFoundError:
        return False
