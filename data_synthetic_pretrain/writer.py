"""Writing a generated dataset: shards in the lingua layout, worker processes, atomic renames, a progress bar."""

import os
import tempfile
from contextlib import ExitStack
from functools import partial
from multiprocessing import get_context

from tqdm import tqdm

from .atomic import atomic_output
from .generators import resolve, sample_line


def dataset_name(preset: str, split: str) -> str:
    """The file-name stem of a dataset: `<preset>_<split>`; a preset that is a file path (a Lano grammar JSON)
    contributes its file name without folders and without ".json"."""
    return f"{os.path.basename(preset).replace('.json', '')}_{split}"


def shard_paths(out: str, name: str, shards: int) -> list[str]:
    return [os.path.join(out, f"{name}.chunk.{j:02d}.jsonl") for j in range(shards)]


BLOCK = 256  # samples per task of a worker process: one string back per block, not per sample


def _lines(generator, preset, split, seed, indices: range) -> str:
    """The JSON lines of samples `indices`, as one string."""
    return "".join([sample_line(generator, preset, split, seed, i) for i in indices])


def write_dataset(generator, preset, split, num, seed, out, shards=1, workers=1, progress=True) -> list[str]:
    """Write `num` samples into `shards` files `out/<name>.chunk.<NN>.jsonl`, name = `dataset_name(preset, split)`
    (shard j holds a contiguous index range). Bytes depend only on the arguments that define the data, never on
    `workers`.

    Every check happens before anything is written; files are written under temporary names and renamed at the
    end, so a failed run leaves nothing behind and existing files are never overwritten.
    """
    resolve(generator, preset, split)
    if num < 1:
        raise ValueError(f"--num {num}; expected at least 1 sample")
    if not 1 <= shards <= min(num, 100):
        raise ValueError(f"--shards {shards}; expected 1..min(num, 100) = {min(num, 100)}")
    if workers < 1:
        raise ValueError(f"--workers {workers}; expected at least 1")
    paths = shard_paths(out, dataset_name(preset, split), shards)
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        raise FileExistsError(f"{existing[0]} already exists; choose another --out or remove it")
    try:
        os.makedirs(out, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe-")
        probe.close()
    except OSError as error:
        raise PermissionError(f"--out {out} is not a writable folder ({error.strerror})") from None

    bounds = [num * j // shards for j in range(shards + 1)]
    lines = partial(_lines, generator, preset, split, seed)
    with ExitStack() as files:  # every shard is renamed into place only when all of them are complete
        outputs = [files.enter_context(atomic_output(path)) for path in paths]
        blocks = [
            (output, range(i, min(i + BLOCK, end)))
            for output, start, end in zip(outputs, bounds[:-1], bounds[1:], strict=True)
            for i in range(start, end, BLOCK)
        ]
        parallel = workers > 1 and len(blocks) > 1  # a single block gains nothing from a pool
        with get_context("spawn").Pool(min(workers, len(blocks))) if parallel else _InProcess() as pool:
            bar = tqdm(total=num, desc=f"{generator} {preset} {split}", unit="sample", disable=not progress)
            texts = pool.imap(lines, [indices for _, indices in blocks])
            for (output, indices), text in zip(blocks, texts, strict=True):
                output.write(text)
                bar.update(len(indices))
            bar.close()
    return paths


class _InProcess:
    """The Pool interface, in this process (no start-up cost for small or single-worker runs)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, iterable, chunksize=1):
        return map(fn, iterable)
