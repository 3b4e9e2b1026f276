"""setup/download_prepare_hf_data.py: a corpus in any of the three formats becomes the trainer's layout with every
document exactly once, deterministically per seed, within its memory bound, never leaving a chunk that looks complete
after an interruption. The Hub download is exercised against a local folder. (The trainer training on the result:
tests/setup/test_walkthrough.py.)"""

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from setup import download_prepare_hf_data as prep

LINGUA_ROOT = Path(prep.__file__).resolve().parents[1]
REPOSITORY = LINGUA_ROOT.parent


def documents(count: int, seed: int = 0, prefix: str = "") -> list[dict]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "naïve", "日本"]
    return [
        {"text": f"{prefix}{i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) + "\nend", "id": i}
        for i in range(count)
    ]


def write_jsonl(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")


def write_parquet(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(docs), path, row_group_size=37)


def write_zst(path: Path, docs: list[dict]) -> None:
    zstandard = pytest.importorskip("zstandard")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    half = len(data) // 2
    # two frames, as concatenated zstd files are: both must be read
    path.write_bytes(zstandard.compress(data[:half]) + zstandard.compress(data[half:]))


def output_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def read_lines(folder: Path) -> dict[str, list[str]]:
    return {name: (folder / name).read_text(encoding="utf-8").splitlines() for name in output_files(folder)}


def prepare(corpus: Path, out: Path, memory_gb: float = 0.001, **options) -> dict[str, list[str]]:
    options = {"nchunks": 3, "val_lines": 5, **options}
    prep.prepare(prep.find_inputs(corpus), out, "corpus", memory_gb, **options)
    return read_lines(out)


@pytest.fixture
def jsonl_corpus(tmp_path) -> tuple[Path, list[dict]]:
    docs = documents(400)
    write_jsonl(tmp_path / "corpus" / "a.jsonl", docs[:250])
    write_jsonl(tmp_path / "corpus" / "sub" / "b.jsonl", docs[250:])
    return tmp_path / "corpus", docs


def test_three_formats_give_the_layout_with_every_document_once(tmp_path):
    docs = documents(300)
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "part1.jsonl", docs[:100])
    write_parquet(corpus / "part2.parquet", docs[100:200])
    write_jsonl(corpus / "part3.jsonl", docs[200:])
    (corpus / ".cache").mkdir()
    write_jsonl(corpus / ".cache" / "ignored.jsonl", documents(5, prefix="hidden"))  # the Hub's own cache folder
    (corpus / "README.md").write_text("not a corpus file")
    out = tmp_path / "data" / "corpus_shuffled"
    lines = prepare(corpus, out, nchunks=4, val_lines=10)

    assert output_files(out) == [f"corpus.chunk.{i:02d}.jsonl" for i in range(4)] + ["corpus.val.jsonl"]
    assert output_files(out.parent) == ["corpus_shuffled"]  # no temporary files left
    everything = [json.loads(line) for text in lines.values() for line in text]
    assert sorted(everything, key=lambda d: d["id"]) == docs  # each document once, parquet rows as JSON objects
    assert len(lines["corpus.val.jsonl"]) == 4 * 10
    # round-robin: 260 training documents over 4 chunks
    assert [len(lines[f"corpus.chunk.{i:02d}.jsonl"]) for i in range(4)] == [65, 65, 65, 65]
    # shuffled: the documents are no longer in input order
    ids = [d["id"] for d in everything]
    assert ids != sorted(ids)


def test_zstd_files_are_read_across_frames(tmp_path):
    docs = documents(120)
    write_zst(tmp_path / "corpus" / "a.jsonl.zst", docs[:60])
    write_zst(tmp_path / "corpus" / "b.jsonl.zstd", docs[60:])
    lines = prepare(tmp_path / "corpus", tmp_path / "out", nchunks=2, val_lines=3)
    everything = [json.loads(line) for text in lines.values() for line in text]
    assert sorted(everything, key=lambda d: d["id"]) == docs


def test_same_seed_same_bytes_other_seed_other_order(jsonl_corpus, tmp_path):
    corpus, docs = jsonl_corpus
    first = prepare(corpus, tmp_path / "a", seed=7)
    again = prepare(corpus, tmp_path / "b", seed=7)
    other = prepare(corpus, tmp_path / "c", seed=8)
    assert list(again) == list(first)
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first != other
    assert Counter(line for text in first.values() for line in text) == Counter(
        line for text in other.values() for line in text
    )
    # every input line verbatim, once
    assert Counter(line for text in first.values() for line in text) == Counter(
        json.dumps(d, ensure_ascii=False) for d in docs
    )


def test_a_bucket_too_big_for_memory_is_split_again(tmp_path):
    bucket = tmp_path / "bucket.000000"
    lines = [f"line {i} {'x' * (i % 50)}\n".encode() for i in range(3000)]
    bucket.write_bytes(b"".join(lines))
    size = bucket.stat().st_size
    parts = list(prep.bucket_order(bucket, size, len(lines), budget=20_000, key=(1, 0)))
    assert len(parts) > 5 and all(sum(map(len, p)) + prep.LINE_OVERHEAD * len(p) <= 20_000 for p in parts)
    assert sorted(line for part in parts for line in part) == sorted(lines)
    assert not bucket.exists() and list(tmp_path.iterdir()) == []


PEAK_RSS = """
from setup import download_prepare_hf_data as prep
prep.prepare(prep.find_inputs(__import__("pathlib").Path({corpus!r})), __import__("pathlib").Path({out!r}), "corpus",
             {memory}, nchunks=4, val_lines=10)
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
"""


def peak_rss(corpus: Path, out: Path, memory_gb: float) -> int:
    code = PEAK_RSS.format(corpus=str(corpus), out=str(out), memory=memory_gb)
    env = dict(os.environ, PYTHONPATH=str(LINGUA_ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return int(result.stdout.split()[-1]) * 1024  # VmHWM: this process's peak RSS in kB (ru_maxrss can include the
    # parent's, inherited across fork and exec)


def test_peak_memory_stays_within_the_bound(tmp_path):
    """A corpus five times the bound: the peak RSS above the same script's on a tiny corpus stays within the bound."""
    memory_gb = 0.008  # 8.6 MB
    bound = int(memory_gb * 2**30)
    rng = random.Random(0)
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "a.jsonl", "w") as f:
        while f.tell() < 5 * bound:
            f.write(json.dumps({"text": "w" * rng.randint(10, 2000)}) + "\n")
    write_jsonl(tmp_path / "tiny" / "a.jsonl", documents(100))
    baseline = peak_rss(tmp_path / "tiny", tmp_path / "out-tiny", memory_gb)
    peak = peak_rss(big, tmp_path / "out-big", memory_gb)
    assert sum(p.stat().st_size for p in (tmp_path / "out-big").iterdir()) == (big / "a.jsonl").stat().st_size
    print(f"peak RSS {peak / 2**20:.1f} MiB, baseline {baseline / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB")
    assert peak - baseline <= bound, (peak - baseline, bound)


class Interrupt(Exception):
    pass


def test_an_interrupted_run_leaves_no_complete_looking_output_and_reruns(jsonl_corpus, tmp_path, monkeypatch):
    corpus, _ = jsonl_corpus
    reference = prepare(corpus, tmp_path / "reference")
    out = tmp_path / "data" / "corpus_shuffled"
    write = prep.ChunkWriter.write
    calls = []

    def write_then_fail(self, lines):
        calls.append(len(lines))
        write(self, lines)
        if len(calls) == 2:
            raise Interrupt

    monkeypatch.setattr(prep.ChunkWriter, "write", write_then_fail)
    with pytest.raises(Interrupt):
        prep.prepare(prep.find_inputs(corpus), out, "corpus", 0.0001, nchunks=3, val_lines=5)
    assert not out.exists()  # the chunks written so far are in the .partial folder only
    assert output_files(out.parent) == [".corpus_shuffled.partial"]
    monkeypatch.setattr(prep.ChunkWriter, "write", write)
    prep.prepare(prep.find_inputs(corpus), out, "corpus", 0.001, nchunks=3, val_lines=5)
    assert read_lines(out) == reference
    assert output_files(out.parent) == ["corpus_shuffled"]


def test_a_finished_output_is_kept_unless_forced(jsonl_corpus, tmp_path):
    corpus, _ = jsonl_corpus
    out = tmp_path / "corpus_shuffled"
    first = prepare(corpus, out, seed=1)
    with pytest.raises(prep.PrepareError, match="already exists"):
        prepare(corpus, out, seed=2)
    assert read_lines(out) == first
    forced = prepare(corpus, out, seed=2, force=True)
    assert forced != first and output_files(tmp_path) == ["corpus", "corpus_shuffled"]


def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prep.main([f"local:{empty}", "1", "--data_dir", str(tmp_path / "data")]) == 1
    assert "holds no .jsonl" in capsys.readouterr().err
    assert prep.main(["no_such_dataset", "1", "--data_dir", str(tmp_path / "data")]) == 1
    assert "expected one of" in capsys.readouterr().err
    write_jsonl(tmp_path / "few" / "a.jsonl", documents(20))
    assert prep.main([f"local:{tmp_path / 'few'}", "1", "--data_dir", str(tmp_path / "data")]) == 1
    assert "too few for 32 chunks" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


class FakeHub:
    """snapshot_download against a local folder standing in for the Hub: copies the files the patterns allow, and can
    fail the first calls with a timeout or refuse with 401."""

    def __init__(self, root: Path, timeouts: int = 0, status: int | None = None):
        self.root, self.timeouts, self.status, self.calls = root, timeouts, status, []

    def __call__(self, repo_id, repo_type, local_dir, allow_patterns, max_workers):
        import fnmatch

        self.calls.append((repo_id, repo_type, allow_patterns))
        if self.status:
            error = RuntimeError("refused")
            error.response = type("Response", (), {"status_code": self.status})()
            raise error
        if len(self.calls) <= self.timeouts:
            raise type("ReadTimeout", (OSError,), {})("read timed out")
        source = self.root / repo_id
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source).as_posix()
            if path.is_file() and (allow_patterns is None or any(fnmatch.fnmatch(relative, p) for p in allow_patterns)):
                target = Path(local_dir) / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        return local_dir


def test_a_hub_dataset_is_downloaded_then_prepared(tmp_path, monkeypatch):
    hub = tmp_path / "hub" / "HuggingFaceFW" / "fineweb-edu"
    docs = documents(200)
    write_parquet(hub / "sample" / "10BT" / "000.parquet", docs[:120])
    write_parquet(hub / "sample" / "10BT" / "001.parquet", docs[120:])
    write_parquet(hub / "sample" / "100BT" / "000.parquet", documents(50, prefix="other sample "))
    fake = FakeHub(tmp_path / "hub", timeouts=2)
    monkeypatch.setattr(prep, "snapshot_download", fake)
    monkeypatch.setattr(prep, "RETRY_DELAY_S", 0)
    data = tmp_path / "data"
    assert prep.main(["fineweb_edu_10bt", "0.01", "--data_dir", str(data), "--nchunks", "2", "--val_lines", "4"]) == 0
    assert fake.calls == [("HuggingFaceFW/fineweb-edu", "dataset", ["sample/10BT/*"])] * 3  # two timeouts retried
    assert output_files(data) == ["fineweb_edu_10bt", "fineweb_edu_10bt_shuffled"]
    out = data / "fineweb_edu_10bt_shuffled"
    assert output_files(out) == ["fineweb_edu_10bt.chunk.00.jsonl", "fineweb_edu_10bt.chunk.01.jsonl",
                                 "fineweb_edu_10bt.val.jsonl"]  # fmt: skip
    everything = [json.loads(line) for text in read_lines(out).values() for line in text]
    assert sorted(everything, key=lambda d: d["id"]) == docs


def test_a_gated_dataset_says_how_to_get_access(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prep, "snapshot_download", FakeHub(tmp_path, status=401))
    assert prep.main(["nemotron_cc_high", "1", "--data_dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert "nvidia/Nemotron-CC-v2" in err and "gated" in err and "log in" in err


def test_gzip_is_not_an_input_format(tmp_path):
    """Only the three documented formats are read; anything else in the folder is ignored, not misread."""
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "a.jsonl", documents(40))
    (corpus / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n'))
    assert [p.name for p in prep.find_inputs(corpus)] == ["a.jsonl"]
