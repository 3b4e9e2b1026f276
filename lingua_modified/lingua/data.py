"""Training data: JSONL chunks -> documents -> a token stream packed into fixed-length samples -> shuffled batches,
with a JSON state that resumes bit-exactly after any batch.

On disk (the lingua layout): `root_dir/<source>/*.chunk.*.jsonl` for training and optional `*.val.jsonl` for
validation. A line is `{"text": "..."}` (or `{"content": ...}`), tokenized by the configured tokenizer with BOS/EOS
added as configured, or `{"tokens": [ids], "labels": [0|1, ...]}`, already tokenized and used exactly as written
(the record carries its own BOS/EOS; `add_bos`/`add_eos` apply to text only); labels are optional, 1 = this token
is a training target. `tokens` wins when a record has both. For the synthetic generators' data use the tokenizer
`tokens` (ids 0..vocab_size-1, default 10000) so the model's vocabulary covers their ids.

The chain, each stage owning the state it needs to resume:
  ChunkReader   this rank's share of one source's chunk files (line i of a shared chunk goes to the reader with
                i % block_size == offset), read one file after another and again from the start at the end
  SourceMixer   draws the source of every document with its own RNG, proportionally to the weights
  Packer        concatenates documents into one stream and cuts windows of seq_len + n_views - 1 tokens; a window
                is expanded into [seq_len, n_views] (view j = the stream shifted by j) when its batch is served
  Prefetcher    holds prefetch_size * batch_size windows, serves them in a random order

The state nests one level per stage (the layout Lingua checkpoints hold); RNGs are numpy PCG64 seeded with
(seed, rank, world_size) for the sources and (seed + 1, rank, world_size) for the shuffle:
  {seq_idx, batch_size, prefetch_size, rng_state,                                      Prefetcher
   it_state: {start_token, output_seq_len, n_views,                                    Packer
     it_state: {name, path, vocab_size, add_bos, add_eos,                              tokenizer
       it_state: {root_dir, sources, rng_state,                                        SourceMixer
         source_to_state: {<source>: {file_paths, file_path, position, line_index,     ChunkReader
                                      block_size, offset, current_iter, skipped}}}}}}
A saved state resumes only with the same data settings and files (checked, with a clear error otherwise).

What a run can rely on:
  - chunk files are sorted by name, so which files a rank reads never depends on the filesystem's listing order;
  - with more chunks than ranks, rank r reads chunks r, r + world, r + 2*world, ... one after another, so every
    file is read;
  - the reader's state also stores its line index, so interleaving and `file:line` in messages stay exact after a
    resume, and the per-source count of skipped lines;
  - a malformed line is skipped, counted and logged as `file:line: reason` (or is an error with
    `error_on_malformed=True`); a token id outside the tokenizer's vocabulary is always an error (a vocabulary
    mismatch, not a damaged line); a source whose files hold no usable line in a whole pass is an error instead
    of an endless loop;
  - when rewinding the packer across several short documents (n_views >= 3) the resume point is exact.
"""

import bisect
import collections
import contextlib
import copy
import glob
import json
import logging
import multiprocessing
import os
import queue
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import numpy as np

from .tokenizer import TokenizerArgs, build_tokenizer, check_tokenizer_args

logger = logging.getLogger(__name__)

# batches the background process may run ahead of training; a few suffice because a batch costs about the same
# every time (queueing prefetch_size of them would hold as much memory again as the shuffle buffer)
QUEUE_BATCHES = 16
POLL_SECONDS = 0.1
# decoding str with a ready decoder skips json.loads' per-call encoding detection (a tenth of a short line's cost)
JSON = json.JSONDecoder()


@dataclass
class DataArgs:
    root_dir: str | None = None
    sources: dict[str, float] = field(default_factory=dict)  # source folder -> weight (normalised)
    batch_size: int = 2  # per data-parallel rank
    seq_len: int = 2048
    n_views: int = 2  # view j of a sample is the token stream shifted by j (inputs, targets, ...)
    seed: int = 42
    add_bos: bool = True  # text records only
    add_eos: bool = True
    load_async: bool = True  # read and pack in a background process
    prefetch_size: int = 64  # the shuffle buffer holds prefetch_size * batch_size samples
    tokenizer: TokenizerArgs = field(default_factory=TokenizerArgs)
    error_on_malformed: bool = False  # False: skip, count and log a malformed line; True: raise


# ---------------------------------------------------------------------------------------------------------------
# records -> documents


class MalformedRecord(Exception):
    """A line that cannot be a document (bad JSON, missing or ill-typed fields)."""


class Document(NamedTuple):
    # plain lists: most documents are short, and per-document numpy calls would cost more than the tokens
    tokens: list  # ids
    mask: list | None  # 0/1 per token, 1 = a training target; None = all are
    n_chars: int | None  # characters of the text; None for a tokens record


def record_to_document(record, tokenizer, add_bos: bool, add_eos: bool) -> Document:
    if not isinstance(record, dict):
        raise MalformedRecord(f"expected a JSON object, got {type(record).__name__}")
    if "tokens" in record:
        tokens = record["tokens"]
        _check_int_list(tokens, "tokens")
        if tokens and (min(tokens) < 0 or max(tokens) >= tokenizer.n_words):
            bad = next(token for token in tokens if not 0 <= token < tokenizer.n_words)
            raise ValueError(
                f"token id {bad} is outside the tokenizer's vocabulary 0..{tokenizer.n_words - 1} "
                "(for pre-tokenized data set data.tokenizer.name=tokens and data.tokenizer.vocab_size)"
            )
        labels = record.get("labels")
        if labels is not None:
            _check_int_list(labels, "labels")
            if len(labels) != len(tokens) or not set(labels) <= {0, 1}:
                raise MalformedRecord(f"labels must be {len(tokens)} values of 0 or 1, one per token")
        return Document(tokens, labels, None)
    text = record.get("text", record.get("content"))
    if not isinstance(text, str):
        raise MalformedRecord('expected a "text" (or "content") string or a "tokens" list')
    return Document(tokenizer.encode(text, add_bos=add_bos, add_eos=add_eos), None, len(text))


def _check_int_list(values, key: str) -> None:
    # one C-level pass: the sum of a list is an int only if every item is (bools count as 0/1)
    try:
        if type(values) is list and type(sum(values)) is int:
            return
    except TypeError:
        pass
    raise MalformedRecord(f'"{key}" must be a list of integers')


# ---------------------------------------------------------------------------------------------------------------
# files -> documents


class ChunkReader:
    """This rank's share of one source: `files` read in turn; of each file only the lines i with
    i % block_size == offset; documents without tokens are passed over. Endless by default (epoch after epoch,
    same order); `one_pass` stops after one.

    `position` is (file index, byte offset, line index, epoch, skipped lines) just after the last document
    returned: a tuple, so the packer's snapshot per document costs nothing; `export` turns one into JSON."""

    def __init__(self, files, block_size, offset, convert, strict, position=(0, 0, 0, 0, 0), one_pass=False):
        self.files, self.block_size, self.offset = list(files), block_size, offset
        self.convert, self.strict, self.one_pass = convert, strict, one_pass
        self.position = position
        self.file_index, self.byte, self.line, self.epoch, self.skipped = position
        self.handle = None
        # a pass that starts at the very beginning and yields nothing proves the source unusable
        self.whole_pass, self.found = position[:3] == (0, 0, 0), 0

    @classmethod
    def from_state(cls, state: dict, convert, strict: bool) -> "ChunkReader":
        files = state["file_paths"]
        position = (files.index(state["file_path"]), state["position"], state["line_index"], state["current_iter"])
        return cls(files, state["block_size"], state["offset"], convert, strict, (*position, state["skipped"]))

    def export(self, position: tuple) -> dict:
        file_index, byte, line, epoch, skipped = position
        return dict(
            file_paths=list(self.files),
            file_path=self.files[file_index],
            position=byte,  # just after the last line read
            line_index=line,  # lines read so far in this file (all of them, not only this rank's)
            block_size=self.block_size,
            offset=self.offset,
            current_iter=epoch,
            skipped=skipped,
        )

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def _open(self) -> None:
        try:
            self.handle = open(self.files[self.file_index], "rb")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"data file {self.files[self.file_index]} is gone: it was there when this data order was made; "
                "restore it (the order needs every file it started with) or start a new run"
            ) from None
        self.handle.seek(self.byte)

    def _next_file(self) -> None:
        self.close()
        self.file_index, self.byte, self.line = self.file_index + 1, 0, 0
        if self.file_index < len(self.files):
            return
        if self.one_pass:
            raise StopIteration
        if self.whole_pass and not self.found:
            share = f"lines i with i % {self.block_size} == {self.offset}"
            raise ValueError(f"no usable line in a whole pass over {self.files} ({share})")
        self.file_index, self.epoch, self.whole_pass, self.found = 0, self.epoch + 1, True, 0

    def next_document(self) -> Document:
        while True:
            if self.handle is None:
                self._open()
            text = self.handle.readline()
            if not text:
                self._next_file()
                continue
            number, self.line, self.byte = self.line, self.line + 1, self.byte + len(text)
            if number % self.block_size != self.offset:
                continue
            where = f"{self.files[self.file_index]}:{number + 1}"
            try:
                document = self.convert(JSON.decode(text.decode("utf-8")))
            except (json.JSONDecodeError, UnicodeError, MalformedRecord) as error:  # UnicodeError: not valid UTF-8
                reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
                if self.strict:
                    raise ValueError(f"{where}: malformed line ({reason})") from None
                self.skipped += 1
                logger.warning(f"{where}: skipped malformed line ({reason}); {self.skipped} skipped in this source")
                continue
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            if not document.tokens:  # e.g. empty text without BOS/EOS: nothing to train on, nothing wrong
                continue
            self.found += 1
            self.position = self.file_index, self.byte, self.line, self.epoch, self.skipped
            return document


class SourceMixer:
    """Documents from several sources: the source of each one is drawn with probability proportional to its weight.

    A snapshot is (draws since `rng_state`, reader positions): counting draws is cheaper than copying the RNG
    state per document, and PCG64 can jump ahead by any number of draws (one 64-bit output per `random()`)."""

    def __init__(self, root_dir: str, readers: dict, weights: dict, rng_state: dict):
        self.root_dir, self.readers, self.weights = root_dir, list(readers.values()), weights
        self.names = list(readers)
        total = sum(weights[name] for name in self.names)
        self.cumulative = np.cumsum([weights[name] / total for name in self.names]).tolist()
        self.cumulative[-1] = 1.0  # a draw in [0, 1) always lands in some source
        self.rng_state, self.draws = rng_state, 0
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = rng_state
        self.positions = [reader.position for reader in self.readers]

    def snapshot(self) -> tuple:
        return self.draws, tuple(self.positions)

    def export(self, snapshot: tuple) -> dict:
        draws, positions = snapshot
        rng = np.random.PCG64()
        rng.state = self.rng_state
        rng.advance(draws)
        return dict(
            root_dir=self.root_dir,
            sources=dict(self.weights),
            rng_state=rng.state,
            source_to_state={
                name: reader.export(position)
                for name, reader, position in zip(self.names, self.readers, positions, strict=True)
            },
        )

    def next_document(self) -> Document:
        source = bisect.bisect_right(self.cumulative, self.rng.random())
        self.draws += 1
        reader = self.readers[source]
        document = reader.next_document()
        self.positions[source] = reader.position
        return document

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


class Packer:
    """One stream of tokens, documents back to back (no separator beyond their own BOS/EOS), cut into windows of
    seq_len + n_views - 1 tokens; consecutive windows overlap by n_views - 1 tokens, so every token is a target
    exactly once in view 1.

    A resume point is (mixer snapshot before a document, tokens of it to drop): the next window starts there."""

    def __init__(self, mixer: SourceMixer, seq_len: int, n_views: int, start_token: int):
        self.mixer, self.seq_len, self.n_views = mixer, seq_len, n_views
        self.window, self.overlap = seq_len + n_views - 1, n_views - 1
        self.carry = None  # the last `overlap` tokens and mask of the previous window
        # (snapshot, length) of recent finished documents, for rewinds longer than the current one's read part
        self.history, self.history_tokens = collections.deque(), 0
        self.document = None
        self._next_document()
        self.pos = start_token
        self.resume_point = (self.document_snapshot, start_token)

    def _next_document(self) -> None:
        if self.document is not None:
            self.history.append((self.document_snapshot, len(self.document.tokens)))
            self.history_tokens += len(self.document.tokens)
            # a rewind goes back `overlap` tokens at most: a document older than that many tokens is out of reach
            while self.history_tokens - self.history[0][1] >= self.overlap and len(self.history) > 1:
                self.history_tokens -= self.history.popleft()[1]
        snapshot = self.mixer.snapshot()
        self.document_snapshot, self.document, self.pos = snapshot, self.mixer.next_document(), 0

    def read_window(self, tokens_out: np.ndarray, mask_out: np.ndarray) -> None:
        """Write the next window into the two 1-D arrays of length seq_len + n_views - 1."""
        tokens, mask = self.carry if self.carry is not None else ([], None)  # mask None: all targets so far
        tokens = list(tokens)
        mask = None if mask is None else list(mask)
        while len(tokens) < self.window:
            document = self.document
            if self.pos == len(document.tokens):
                self._next_document()
                document = self.document
            end = min(self.pos + self.window - len(tokens), len(document.tokens))
            if document.mask is not None and mask is None:
                mask = [1] * len(tokens)
            if mask is not None:
                mask += [1] * (end - self.pos) if document.mask is None else document.mask[self.pos : end]
            tokens += document.tokens[self.pos : end]
            self.pos = end
        tokens_out[:] = tokens
        mask_out[:] = True if mask is None else mask
        self.carry = tokens[self.seq_len :], None if mask is None else mask[self.seq_len :]
        self.resume_point = self._rewind(self.overlap)

    def _rewind(self, back: int) -> tuple:
        """The point `back` tokens before the end of what was read."""
        if self.pos >= back:
            return self.document_snapshot, self.pos - back
        back -= self.pos
        for snapshot, length in reversed(self.history):
            if length >= back:
                return snapshot, length - back
            back -= length
        raise AssertionError("a rewind reached past the documents the packer keeps")

    def export(self, start_token: int, document_state: dict) -> dict:
        return dict(start_token=start_token, output_seq_len=self.seq_len, n_views=self.n_views, it_state=document_state)


class Prefetcher:
    """prefetch_size * batch_size windows served in a shuffled order. A round: shuffle the buffer, serve its blocks
    of batch_size in turn, refilling each block from the packer right after serving it. The state of a batch is
    (packer point where the round's contents began to be read, RNG before the round's shuffle, blocks served in
    the round): replaying "read the round, shuffle, refill the served blocks" rebuilds the buffer exactly."""

    def __init__(self, packer: Packer, batch_size: int, prefetch_size: int, rng_state: dict, seq_idx: int):
        self.packer, self.batch_size, self.prefetch_size = packer, batch_size, prefetch_size
        slots = batch_size * prefetch_size
        self.tokens = np.empty((slots, packer.window), dtype=np.int64)
        self.mask = np.empty((slots, packer.window), dtype=np.bool_)
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = rng_state
        # slot s (in shuffled order) lives in row order[s]: a shuffle permutes this index, not the rows
        self.order = np.arange(slots)
        self.round_start = packer.resume_point
        for row in range(slots):
            packer.read_window(self.tokens[row], self.mask[row])
        self._shuffle()
        for block in range(seq_idx):
            self._refill(block)
        self.seq_idx = seq_idx

    def _shuffle(self) -> None:
        self.round_rng = self.rng.bit_generator.state
        self.order = self.order[self.rng.permutation(len(self.order))]
        self.round_point = self.round_start
        self.round_start = self.packer.resume_point  # the next round's contents are read from here on

    def _refill(self, block: int) -> None:
        for row in self.order[block * self.batch_size : (block + 1) * self.batch_size]:
            self.packer.read_window(self.tokens[row], self.mask[row])

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[self.seq_idx * self.batch_size : (self.seq_idx + 1) * self.batch_size]
        tokens, mask = self._views(self.tokens[rows]), self._views(self.mask[rows])
        self._refill(self.seq_idx)
        self.seq_idx = (self.seq_idx + 1) % self.prefetch_size
        if self.seq_idx == 0:
            self._shuffle()
        return tokens, mask

    def _views(self, windows: np.ndarray) -> np.ndarray:
        n_views = self.packer.n_views
        return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(windows, n_views, axis=1))

    def export(self, packer_state: dict) -> dict:
        return dict(
            seq_idx=self.seq_idx,
            batch_size=self.batch_size,
            prefetch_size=self.prefetch_size,
            rng_state=copy.deepcopy(self.round_rng),
            it_state=packer_state,
        )


# ---------------------------------------------------------------------------------------------------------------
# the state and the loader the trainer uses


def find_chunks(root_dir: str, source: str, pattern: str = "*.chunk.*.jsonl") -> list[str]:
    """The source's files matching `pattern`, as absolute paths sorted by name; one clear error if there are none."""
    folder = os.path.join(root_dir, source)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"data source {source!r}: {folder} is not a folder")
    files = sorted(glob.glob(os.path.join(glob.escape(os.path.abspath(folder)), pattern)))
    if not files:
        raise FileNotFoundError(f"data source {source!r}: no {pattern} files in {folder}")
    return files


def assign_chunks(chunks: list[str], rank: int, world_size: int) -> tuple[list[str], int, int]:
    """(files, block_size, offset) of `rank`: with at least as many chunks as ranks, every world_size-th chunk
    starting at `rank`; with fewer, world_size must be a multiple of the chunk count and the
    k = world_size / n_chunks ranks sharing a chunk take its lines in turn (line i to the one with i % k)."""
    if len(chunks) >= world_size:
        return chunks[rank::world_size], 1, 0
    if world_size % len(chunks):
        raise ValueError(
            f"{len(chunks)} chunk files ({os.path.dirname(chunks[0])}) cannot be shared evenly by {world_size} "
            "data-parallel ranks; expected at least as many chunks as ranks or a divisor of the rank count"
        )
    share = world_size // len(chunks)
    return [chunks[rank // share]], share, rank % share


def init_dataloader_state_from_args(args: DataArgs, rank: int, world_size: int) -> dict:
    """The JSON state that starts the data of data-parallel rank `rank` of `world_size` from the beginning."""
    _check_args(args)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank}; expected 0 <= rank < world_size={world_size}")
    source_to_state = {}
    for source in args.sources:
        files, block_size, offset = assign_chunks(find_chunks(args.root_dir, source), rank, world_size)
        source_to_state[source] = ChunkReader(files, block_size, offset, None, False).export((0, 0, 0, 0, 0))
    mixer_state = dict(
        root_dir=args.root_dir,
        sources=dict(args.sources),
        rng_state=np.random.PCG64((args.seed, rank, world_size)).state,
        source_to_state=source_to_state,
    )
    tokenizer_state = dict(
        name=args.tokenizer.name,
        path=args.tokenizer.path,
        vocab_size=args.tokenizer.vocab_size,
        add_bos=args.add_bos,
        add_eos=args.add_eos,
        it_state=mixer_state,
    )
    return dict(
        seq_idx=0,
        batch_size=args.batch_size,
        prefetch_size=args.prefetch_size,
        rng_state=np.random.PCG64((args.seed + 1, rank, world_size)).state,
        it_state=dict(start_token=0, output_seq_len=args.seq_len, n_views=args.n_views, it_state=tokenizer_state),
    )


def _check_args(args: DataArgs) -> None:
    if args.root_dir is None or not os.path.isdir(args.root_dir):
        raise FileNotFoundError(f"data.root_dir={args.root_dir!r} is not a folder")
    if not args.sources:
        raise ValueError("data.sources is empty; expected {source folder name: weight}")
    for source, weight in args.sources.items():
        if not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"data.sources.{source}={weight!r}; expected a weight >= 0")
    if sum(args.sources.values()) <= 0:
        raise ValueError(f"data.sources={dict(args.sources)}; expected at least one positive weight")
    for name in ("batch_size", "seq_len", "n_views", "prefetch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"data.{name}={getattr(args, name)}; expected a positive integer")
    check_tokenizer_args(args.tokenizer.name, args.tokenizer.path)


def _check_state_matches(args: DataArgs, state: dict) -> None:
    """A saved state describes its own data; resuming it under different data settings would silently ignore them."""
    packer = state["it_state"]
    tokenizer = packer["it_state"]
    mixer = tokenizer["it_state"]
    pairs = {
        "batch_size": (args.batch_size, state["batch_size"]),
        "prefetch_size": (args.prefetch_size, state["prefetch_size"]),
        "seq_len": (args.seq_len, packer["output_seq_len"]),
        "n_views": (args.n_views, packer["n_views"]),
        "add_bos": (args.add_bos, tokenizer["add_bos"]),
        "add_eos": (args.add_eos, tokenizer["add_eos"]),
        "tokenizer.name": (args.tokenizer.name, tokenizer["name"]),
        "tokenizer.path": (args.tokenizer.path, tokenizer["path"]),
        "tokenizer.vocab_size": (args.tokenizer.vocab_size, tokenizer["vocab_size"]),
        "root_dir": (args.root_dir, mixer["root_dir"]),
        "sources": (dict(args.sources), mixer["sources"]),
    }
    for name, (wanted, saved) in pairs.items():
        if wanted != saved:
            raise ValueError(f"data.{name}={wanted!r} but the saved loader state has {saved!r}; resume with the same")
    for source in mixer["source_to_state"].values():
        missing = [path for path in source["file_paths"] if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"{missing[0]} (in the saved loader state) is missing; resume needs the same files")


class BatchStream:
    """The whole chain in this process, built from a state; iterating yields (tokens, mask, state)."""

    def __init__(self, state: dict, strict: bool):
        packer_state = state["it_state"]
        tokenizer_state = packer_state["it_state"]
        mixer_state = tokenizer_state["it_state"]
        tokenizer = build_tokenizer(tokenizer_state["name"], tokenizer_state["path"], tokenizer_state["vocab_size"])
        specials = dict(add_bos=tokenizer_state["add_bos"], add_eos=tokenizer_state["add_eos"])
        convert = partial(record_to_document, tokenizer=tokenizer, **specials)
        self.tokenizer_fields = {key: value for key, value in tokenizer_state.items() if key != "it_state"}
        readers = {
            name: ChunkReader.from_state(reader_state, convert, strict)
            for name, reader_state in mixer_state["source_to_state"].items()
        }
        self.mixer = SourceMixer(mixer_state["root_dir"], readers, mixer_state["sources"], mixer_state["rng_state"])
        try:
            self.packer = Packer(
                self.mixer, packer_state["output_seq_len"], packer_state["n_views"], packer_state["start_token"]
            )
            self.prefetcher = Prefetcher(
                self.packer, state["batch_size"], state["prefetch_size"], state["rng_state"], state["seq_idx"]
            )
        except BaseException:
            self.mixer.close()
            raise

    def __iter__(self):
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray, dict]:
        tokens, mask = self.prefetcher.next_batch()
        snapshot, start_token = self.prefetcher.round_point
        document_state = dict(self.tokenizer_fields, it_state=self.mixer.export(snapshot))
        return tokens, mask, self.prefetcher.export(self.packer.export(start_token, document_state))

    def close(self) -> None:
        self.mixer.close()


class _ProducerError(NamedTuple):
    traceback: str
    error: Exception | None  # a data error (bad file, bad line) the trainer re-raises as it is


# errors about the data itself: their message says what is wrong, so the trainer raises them as they are
DATA_ERRORS = (ValueError, FileNotFoundError)


def _produce(state: dict, strict: bool, batches, stop) -> None:
    """The background process: run the chain and queue its batches until told to stop."""
    # a spawned process starts with no logging set up: without this, skipped-line warnings would lose their level
    logging.basicConfig(format="%(levelname)s data loader process: %(message)s", level=logging.INFO)
    try:
        stream = BatchStream(state, strict)
        try:
            while not _told_to_stop(stop):
                _put(batches, next(stream), stop)
        finally:
            stream.close()
    except Exception as error:
        # put() only hands the item to the queue's feeder thread, which flushes it before the process exits
        _put(batches, _ProducerError(traceback.format_exc(), error if isinstance(error, DATA_ERRORS) else None), stop)
        return
    batches.cancel_join_thread()  # stopped: exit at once, even with batches nobody will read


def _told_to_stop(stop) -> bool:
    # a trainer killed outright never sets `stop`: without the parent check this process would wait forever
    return stop.is_set() or not multiprocessing.parent_process().is_alive()


def _put(batches, item, stop) -> None:
    while not _told_to_stop(stop):
        try:
            batches.put(item, timeout=POLL_SECONDS)
            return
        except queue.Full:
            continue


class AsyncBatches:
    """Batches from a background process (started with spawn or forkserver: forking a process that holds CUDA
    or threads is unsafe). Each batch travels with its state, so running ahead does not affect resumption. The
    process forwards its own errors with their traceback, and exits by itself when the trainer dies."""

    def __init__(self, state: dict, strict: bool, start_method: str = "forkserver"):
        context = multiprocessing.get_context(start_method)
        self.batches = context.Queue(maxsize=QUEUE_BATCHES)
        self.stop = context.Event()
        self.process = context.Process(target=_produce, args=(state, strict, self.batches, self.stop), daemon=True)
        self.process.start()

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            try:
                item = self.batches.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self.process.is_alive():
                    continue
                try:  # it may have queued its error just before exiting
                    item = self.batches.get(timeout=1.0)
                except queue.Empty:
                    raise RuntimeError(
                        f"the data loader process quit unexpectedly (exit code {self.process.exitcode})"
                    ) from None
            if isinstance(item, _ProducerError):
                if item.error is not None:
                    raise item.error
                raise RuntimeError(f"the data loader process failed:\n{item.traceback}")
            return item

    def close(self) -> None:
        self.stop.set()
        self.process.join(timeout=1.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.batches.close()


@contextlib.contextmanager
def build_dataloader_from_args(args: DataArgs, state: dict, start_method: str = "forkserver"):
    """Entering gives an iterator of (tokens, mask, state): tokens int64 and mask bool, both
    [batch_size, seq_len, n_views] (mask True = a training target), and the state that resumes after this batch.
    With `load_async` the batches come from a background process started with `start_method`."""
    _check_state_matches(args, state)
    if args.load_async:
        loader = AsyncBatches(state, args.error_on_malformed, start_method)
    else:
        loader = BatchStream(state, args.error_on_malformed)
    try:
        yield loader
    finally:
        loader.close()


# ---------------------------------------------------------------------------------------------------------------
# validation files


class ValidationDocument(NamedTuple):
    tokens: np.ndarray  # int64, the whole document
    mask: np.ndarray  # bool, True = scored
    n_chars: int | None  # characters of the text (None for a tokens record)

    def windows(self, seq_len: int):
        """(tokens, mask) pieces of at most seq_len + 1 tokens, consecutive ones sharing one token, so that with
        inputs piece[:-1] and targets piece[1:] every token after the first is a target exactly once."""
        for start in range(0, max(len(self.tokens) - 1, 1), seq_len):
            yield self.tokens[start : start + seq_len + 1], self.mask[start : start + seq_len + 1]


def iter_validation_documents(
    root_dir: str,
    source: str,
    tokenizer,
    rank: int = 0,
    world_size: int = 1,
    add_bos: bool = True,
    add_eos: bool = True,
    max_docs: int | None = None,
    error_on_malformed: bool = False,
):
    """One pass over this rank's share (line i when i % world_size == rank) of `root_dir/source/*.val.jsonl`,
    files in name order, at most `max_docs` documents."""
    files = find_chunks(root_dir, source, "*.val.jsonl")
    convert = partial(record_to_document, tokenizer=tokenizer, add_bos=add_bos, add_eos=add_eos)
    reader = ChunkReader(files, world_size, rank, convert, error_on_malformed, one_pass=True)
    try:
        count = 0
        while max_docs is None or count < max_docs:
            try:
                document = reader.next_document()
            except StopIteration:
                return
            count += 1
            tokens = np.array(document.tokens, dtype=np.int64)
            mask = np.ones(len(tokens), np.bool_) if document.mask is None else np.array(document.mask, np.bool_)
            yield ValidationDocument(tokens, mask, document.n_chars)
    finally:
        reader.close()
