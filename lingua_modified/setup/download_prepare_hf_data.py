"""Download a pretraining corpus and write it in the trainer's data layout, shuffled and split into chunks.

    python setup/download_prepare_hf_data.py DATASET MEMORY_GB [--data_dir data] [--seed 42] [--nchunks 32]

DATASET is one of DATASETS below (downloaded from the Hugging Face Hub into `<data_dir>/<dataset>/`) or
`local:PATH` for a folder of .jsonl, .jsonl.zst(d) or .parquet files already on disk. The result is

    <data_dir>/<dataset>_shuffled/<dataset>.chunk.00.jsonl ... <dataset>.chunk.<nchunks-1>.jsonl
    <data_dir>/<dataset>_shuffled/<dataset>.val.jsonl

one JSON document per line: every document of the corpus exactly once, in a seeded random order, dealt round-robin
into the chunks; the first `--val_lines` (10,000) documents of every chunk are moved to the validation file. Train on
it with `data.root_dir=<data_dir>` and `data.sources={<dataset>_shuffled: 1.0}` (or name the folder with `--source`,
e.g. `--source original_shuffled` for the Llama recipes).

The shuffle is an external one that keeps its memory under MEMORY_GB: documents are scattered into temporary bucket
files by a seeded random draw, then each bucket is read, permuted and dealt out in turn (a bucket that would not fit
is split again). The same input, seed, MEMORY_GB and chunk count give byte-identical files. Everything is written
under `<data_dir>/.<source>.partial/` and renamed into place at the end, so an interrupted run leaves no chunk that
looks complete; running the same command again starts the shuffle over (the download resumes). A finished folder is
never replaced without `--force`.
"""

import argparse
import io
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__:  # imported as setup.download_prepare_hf_data
    from .atomic import publish_folder
else:  # run by path (python setup/download_prepare_hf_data.py), with this folder first on sys.path
    from atomic import publish_folder


@dataclass(frozen=True)
class HubDataset:
    repo_id: str
    allow_patterns: tuple[str, ...] | None  # None: the whole repository


DATASETS = {
    "fineweb_edu": HubDataset("HuggingFaceFW/fineweb-edu", None),
    "fineweb_edu_10bt": HubDataset("HuggingFaceFW/fineweb-edu", ("sample/10BT/*",)),
    "dclm_baseline_1.0": HubDataset("mlfoundations/dclm-baseline-1.0", ("*.jsonl.zst",)),
    "dclm_baseline_1.0_10prct": HubDataset("mlfoundations/dclm-baseline-1.0", ("global-shard_01_of_10/*.jsonl.zst",)),
    # Nemotron-CC, the corpus of the recipes: its high-quality, non-synthetic documents (see setup/README.md for how
    # this relates to the recipes' `quality=high=shuffled` and `original_shuffled` sources). Gated: accept the terms
    # on the dataset's page and log in (`hf auth login` or HF_TOKEN) first.
    "nemotron_cc_high": HubDataset("nvidia/Nemotron-CC-v2", ("High-Quality/*",)),
}
INPUT_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.zstd", ".parquet")
VAL_LINES = 10_000  # documents per chunk moved to the validation file
DOWNLOAD_ATTEMPTS = 5
RETRY_DELAY_S = 10.0
LINE_OVERHEAD = 64  # bytes Python spends per line held in memory (bytes object header, list slot, permutation entry)
DRAW_BLOCK = 1 << 16  # bucket indices drawn per call to the random generator


class PrepareError(ValueError):
    """Input or options this script cannot use; raised before anything is written."""


def snapshot_download(**kwargs) -> str:
    """huggingface_hub.snapshot_download (imported on use, so that a local corpus needs no huggingface_hub)."""
    from huggingface_hub import snapshot_download as download

    return download(**kwargs)


def is_transient(error: Exception) -> bool:
    """A network error worth retrying (timeouts, dropped connections), as opposed to a missing or gated repo."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutException", "ConnectionError",
                         "ConnectError", "RemoteProtocolError", "ChunkedEncodingError", "TimeoutError"})  # fmt: skip


def download(dataset: HubDataset, local_dir: Path, workers: int) -> Path:
    """Fetch the dataset's files into `local_dir`; files already there are kept (an interrupted download resumes)."""
    attempt = 1
    while True:
        try:
            snapshot_download(
                repo_id=dataset.repo_id,
                repo_type="dataset",
                local_dir=str(local_dir),
                allow_patterns=list(dataset.allow_patterns) if dataset.allow_patterns else None,
                max_workers=workers,
            )
            return local_dir
        except Exception as error:  # huggingface_hub's and the HTTP client's errors: classified here
            status = getattr(getattr(error, "response", None), "status_code", None)
            if type(error).__name__ == "GatedRepoError" or status in (401, 403):
                raise PrepareError(
                    f"the Hub refused {dataset.repo_id!r} ({status or type(error).__name__}): it is gated or private; "
                    "accept its terms on huggingface.co and log in (`hf auth login` or HF_TOKEN)"
                ) from error
            if not is_transient(error) or attempt == DOWNLOAD_ATTEMPTS:
                raise
            print(f"download attempt {attempt} failed ({error}); retrying in {RETRY_DELAY_S:.0f} s", file=sys.stderr)
            time.sleep(RETRY_DELAY_S)
            attempt += 1


def find_inputs(folder: Path) -> list[Path]:
    """The corpus files under `folder`, sorted by path (hidden folders such as the Hub's `.cache` are skipped)."""
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.name.endswith(INPUT_SUFFIXES)
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not files:
        raise PrepareError(f"{folder} holds no {', '.join(INPUT_SUFFIXES)} files; expected the corpus there")
    return files


class CountingReader(io.RawIOBase):
    """A binary file that reports how many bytes were read from it to a progress bar."""

    def __init__(self, raw, progress: tqdm):
        self.raw, self.progress = raw, progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.progress.update(n)
        return n


def zstd_reader(raw):
    try:
        import zstandard
    except ImportError:
        raise PrepareError("reading .jsonl.zst files needs the zstandard package (pip install zstandard)") from None
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)


def read_documents(path: Path, progress: tqdm) -> Iterator[bytes]:
    """The documents of one corpus file as JSON lines (bytes ending in one newline); blank lines are dropped. Parquet
    rows become JSON objects of all their columns."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield json.dumps(row, ensure_ascii=False, default=str).encode("utf-8") + b"\n"
        progress.update(path.stat().st_size)
        return
    with open(path, "rb", buffering=0) as raw:
        counted = CountingReader(raw, progress)
        source = zstd_reader(counted) if path.name.endswith((".zst", ".zstd")) else counted
        for line in io.BufferedReader(source, buffer_size=1 << 20):
            if line.strip():
                yield line if line.endswith(b"\n") and not line.endswith(b"\r\n") else line.rstrip(b"\r\n") + b"\n"


def estimated_size(path: Path) -> int:
    """Bytes a file's documents take as JSON lines, estimated from its size (compressed formats expand)."""
    size = path.stat().st_size
    return size * 5 if path.name.endswith((".zst", ".zstd", ".parquet")) else size


class Buckets:
    """Temporary files that documents are scattered into; at most `buffer_bytes` wait in memory at a time."""

    def __init__(self, folder: Path, count: int, buffer_bytes: int, rng: np.random.Generator):
        self.folder, self.count, self.buffer_bytes, self.rng = folder, count, buffer_bytes, rng
        folder.mkdir(parents=True)
        self.paths = [folder / f"bucket.{i:06d}" for i in range(count)]
        self.pending: list[list[bytes]] = [[] for _ in range(count)]
        self.pending_bytes = 0
        self.sizes = [0] * count
        self.lines = [0] * count
        self.draws = np.empty(0, dtype=np.int64)
        self.next_draw = 0

    def add(self, line: bytes) -> None:
        if self.next_draw == len(self.draws):
            self.draws, self.next_draw = self.rng.integers(self.count, size=DRAW_BLOCK), 0
        bucket = int(self.draws[self.next_draw])
        self.next_draw += 1
        self.pending[bucket].append(line)
        self.sizes[bucket] += len(line)
        self.lines[bucket] += 1
        self.pending_bytes += len(line) + LINE_OVERHEAD
        if self.pending_bytes >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        for path, lines in zip(self.paths, self.pending, strict=True):
            if lines:
                with open(path, "ab") as f:
                    f.writelines(lines)
                lines.clear()
        self.pending_bytes = 0


def scatter(lines: Iterator[bytes], folder: Path, count: int, buffer_bytes: int, rng) -> Buckets:
    buckets = Buckets(folder, count, buffer_bytes, rng)
    for line in lines:
        buckets.add(line)
    buckets.flush()
    return buckets


def bucket_order(path: Path, size: int, lines: int, budget: int, key: tuple[int, ...]) -> Iterator[list[bytes]]:
    """The lines of one bucket in random order, as one or more lists that each fit the memory budget: a bucket too big
    for it is scattered again into smaller buckets, which are yielded in turn. `key` (the seed, then the bucket's
    index at every level) seeds each permutation and each split."""
    if size + LINE_OVERHEAD * lines <= budget or lines <= 1:
        with open(path, "rb") as f:
            content = f.readlines()
        order = np.random.default_rng([*key, 0]).permutation(len(content))
        yield [content[i] for i in order]
        return
    parts = math.ceil((size + LINE_OVERHEAD * lines) / (budget / 2))
    rng = np.random.default_rng([*key, 1, parts])
    with open(path, "rb") as f:
        sub = scatter(f, path.with_name(path.name + ".split"), parts, budget // 4, rng)
    path.unlink()
    for index, (sub_path, sub_size, sub_lines) in enumerate(zip(sub.paths, sub.sizes, sub.lines, strict=True)):
        if sub_lines:
            yield from bucket_order(sub_path, sub_size, sub_lines, budget, (*key, index))
            sub_path.unlink()
    sub.folder.rmdir()


class ChunkWriter:
    """Deals lines round-robin into `nchunks` chunk files; each chunk's first `val_lines` go to its validation part."""

    def __init__(self, folder: Path, name: str, nchunks: int, val_lines: int, buffer_bytes: int):
        self.nchunks, self.val_lines, self.written = nchunks, val_lines, 0
        buffer = max(4096, buffer_bytes // (2 * nchunks))
        self.chunk_paths = [folder / f"{name}.chunk.{i:02d}.jsonl" for i in range(nchunks)]
        self.val_parts = [folder / f".val.part.{i:02d}" for i in range(nchunks)]
        self.val_path = folder / f"{name}.val.jsonl"
        self.chunks = [open(path, "wb", buffering=buffer) for path in self.chunk_paths]
        self.vals = [open(path, "wb", buffering=buffer) for path in self.val_parts]

    def write(self, lines: list[bytes]) -> None:
        for line in lines:
            chunk, position = self.written % self.nchunks, self.written // self.nchunks
            (self.vals if position < self.val_lines else self.chunks)[chunk].write(line)
            self.written += 1

    def close(self) -> None:
        for f in self.chunks + self.vals:
            f.close()
        with open(self.val_path, "wb") as out:
            for part in self.val_parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
                part.unlink()


def prepare(
    inputs: list[Path],
    out_dir: Path,
    name: str,
    memory_gb: float,
    seed: int = 42,
    nchunks: int = 32,
    val_lines: int = VAL_LINES,
    force: bool = False,
) -> Path:
    """Shuffle the documents of `inputs` into `out_dir` (chunks + validation file); returns `out_dir`."""
    if memory_gb <= 0:
        raise PrepareError(f"memory {memory_gb} GB; expected a positive number of gigabytes")
    if nchunks < 1 or nchunks > 100:
        raise PrepareError(f"--nchunks {nchunks}; expected 1 to 100 (chunk files are numbered with two digits)")
    if val_lines < 0:
        raise PrepareError(f"--val_lines {val_lines}; expected 0 or more")
    if out_dir.exists() and not force:
        raise PrepareError(f"{out_dir} already exists; expected a new folder (or pass --force to replace it)")
    budget = int(memory_gb * 2**30)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # what an interrupted run left
    partial.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    total = sum(estimated_size(path) for path in inputs)
    count = max(1, math.ceil(total / (budget / 3)))
    with tqdm(total=sum(p.stat().st_size for p in inputs), unit="B", unit_scale=True, desc="scatter") as progress:
        documents = (line for path in inputs for line in read_documents(path, progress))
        buckets = scatter(documents, partial / "buckets", count, budget // 4, rng)
    lines = sum(buckets.lines)
    if lines < nchunks * (val_lines + 1):
        shutil.rmtree(partial)
        raise PrepareError(
            f"the corpus has {lines} documents, too few for {nchunks} chunks that each give {val_lines} to the "
            f"validation file and keep one; expected at least {nchunks * (val_lines + 1)} (lower --nchunks or "
            "--val_lines)"
        )
    writer = ChunkWriter(partial, name, nchunks, val_lines, budget // 4)
    with tqdm(total=lines, unit="doc", unit_scale=True, desc="shuffle and split") as progress:
        for index, (path, size, n) in enumerate(zip(buckets.paths, buckets.sizes, buckets.lines, strict=True)):
            if n:
                for ordered in bucket_order(path, size, n, budget // 2, (seed, index)):
                    writer.write(ordered)
                    progress.update(len(ordered))
                path.unlink()
    writer.close()
    buckets.folder.rmdir()
    publish_folder(partial, out_dir, overwrite=force)  # with --force the old folder goes once the new one is in place
    print(f"wrote {lines} documents to {out_dir} ({nchunks} chunks, {min(lines, nchunks * val_lines)} for validation)")
    return out_dir


def resolve(dataset: str, data_dir: Path, workers: int) -> tuple[str, list[Path]]:
    """(name of the output files, corpus files) of a DATASET argument, downloading a Hub dataset first."""
    if dataset.startswith("local:"):
        folder = Path(dataset.removeprefix("local:")).expanduser()
        if not folder.is_dir():
            raise PrepareError(f"{dataset!r}: {folder} is not a folder; expected local:PATH to a folder of the corpus")
        return folder.resolve().name, find_inputs(folder)
    if dataset not in DATASETS:
        raise PrepareError(f"dataset {dataset!r} is not known; expected one of {sorted(DATASETS)} or local:PATH")
    source = data_dir / dataset
    download(DATASETS[dataset], source, workers)
    return dataset, find_inputs(source)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python setup/download_prepare_hf_data.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dataset", help=f"one of {', '.join(DATASETS)}, or local:PATH")
    parser.add_argument("memory", type=float, help="memory the shuffle may use, in GB")
    parser.add_argument("--data_dir", default="data", type=Path, help="where to download and write (default: data)")
    parser.add_argument("--seed", type=int, default=42, help="shuffle seed (default: 42)")
    parser.add_argument("--nchunks", type=int, default=32, help="chunk files (default: 32; use 1 or your GPU count)")
    parser.add_argument("--val_lines", type=int, default=VAL_LINES, help="documents per chunk for validation")
    parser.add_argument("--source", help="name of the output folder (default: <dataset>_shuffled)")
    parser.add_argument("--workers", type=int, default=16, help="parallel downloads (default: 16)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.dataset.startswith("local:"):
            name = Path(args.dataset.removeprefix("local:")).expanduser().resolve().name
        else:
            name = args.dataset
        out_dir = args.data_dir / (args.source or f"{name}_shuffled")
        if out_dir.exists() and not args.force:  # checked before a long download, too
            raise PrepareError(f"{out_dir} already exists; expected a new folder (or pass --force to replace it)")
        name, inputs = resolve(args.dataset, args.data_dir, args.workers)
        prepare(inputs, out_dir, name, args.memory, args.seed, args.nchunks, args.val_lines, args.force)
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
