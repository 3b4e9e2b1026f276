"""Tokenizers: text <-> token ids, each with `n_words`, `bos_id`, `eos_id`, `encode(text, add_bos, add_eos)` and
`decode(ids)`.

    bytes     UTF-8 bytes; BOS 256, EOS 257, 258 words
    mock      for tests: encode gives back the ids it is handed; 256 words, no BOS/EOS
    sp        a SentencePiece model file; the model's own BOS/EOS
    tiktoken  a BPE ranks file (one "base64(token) rank" per line) with the Llama-3 split pattern; 256 special ids
              follow the ranks: BOS len(ranks), EOS len(ranks) + 1, n_words len(ranks) + 256
    tokens    for data that is already tokenized (the synthetic generators' `{"tokens": [...]}` records): ids
              0..vocab_size-1 with no text behind them; its "text" is the ids written in decimal, separated by
              spaces ("9999 3 74"). BOS = vocab_size - 1 and EOS = vocab_size - 2, the synthetic generators'
              convention (BOS 9999, EOS 9998 with the default vocab_size 10000).

The ranks file is parsed here rather than with tiktoken's loader, which caches every file it reads under the
temporary folder keyed by its path (a ranks file rewritten in place would be read stale).
"""

import base64
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class TokenizerArgs:
    name: str = "bytes"  # bytes | mock | sp | tiktoken | tokens
    path: str | None = None  # model file of sp, ranks file of tiktoken
    vocab_size: int = 10000  # "tokens" only: ids are 0..vocab_size-1 (the synthetic data uses 0..9999)


class ByteTokenizer:
    bos_id, eos_id, n_words = 256, 257, 258

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return [self.bos_id] * add_bos + list(text.encode("utf-8")) + [self.eos_id] * add_eos

    def decode(self, ids) -> str:
        # ids >= 256 are BOS/EOS, which have no bytes; a cut inside a multi-byte character stays visible as \x..
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="backslashreplace")


class MockTokenizer:
    """Hands back what it is given (a stand-in for tests); it has no text and no specials."""

    bos_id, eos_id, n_words = None, None, 256

    def encode(self, ids, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        if isinstance(ids, str):
            raise TypeError("the mock tokenizer encodes lists of ids, not text; use the bytes tokenizer for text")
        return list(ids)

    def decode(self, ids) -> str:
        return " ".join(str(i) for i in ids)


class TokenIdTokenizer:
    """Pre-tokenized data: a record's ids are the tokens; text is the ids in decimal separated by whitespace."""

    def __init__(self, vocab_size: int):
        if not isinstance(vocab_size, int) or vocab_size < 3:
            raise ValueError(f"tokenizer vocab_size={vocab_size!r}; expected an integer >= 3")
        self.n_words = vocab_size
        self.bos_id, self.eos_id = vocab_size - 1, vocab_size - 2

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        try:
            ids = [int(word) for word in text.split()]
        except ValueError:
            raise ValueError(f"{text[:80]!r} is not a list of token ids separated by spaces") from None
        bad = [i for i in ids if not 0 <= i < self.n_words]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary 0..{self.n_words - 1}")
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)


class SentencePieceTokenizer:
    def __init__(self, path: str):
        from sentencepiece import SentencePieceProcessor

        self.model = SentencePieceProcessor(model_file=path)
        self.n_words = self.model.vocab_size()
        self.bos_id, self.eos_id = self.model.bos_id(), self.model.eos_id()
        logger.info(f"SentencePiece model {path}: {self.n_words} words, BOS {self.bos_id}, EOS {self.eos_id}")

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        return [self.bos_id] * add_bos + self.model.encode(text) + [self.eos_id] * add_eos

    def decode(self, ids) -> str:
        return self.model.decode([int(i) for i in ids])


# the Llama-3 pre-tokenizer split: contractions, letter runs, digit triples, punctuation runs, newlines, spaces
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# specials by offset after the ranks; every other offset below 256 is reserved_special_token_<offset>
NAMED_SPECIALS = {
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    2: "<|fim_prefix|>",
    3: "<|fim_middle|>",
    253: "<|fim_end_fill|>",
    254: "<|fim_pad|>",
    255: "<|fim_suffix|>",
}
# long texts are encoded in pieces of this many characters (the split regex is slow on huge inputs)
TIKTOKEN_PIECE_CHARS = 400_000


def read_bpe_ranks(path: str) -> dict[bytes, int]:
    ranks = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise ValueError(f"{path}:{number}: expected 'base64-token rank', got {line[:80]!r}") from None
    return ranks


class TikTokenTokenizer:
    def __init__(self, path: str):
        import tiktoken

        ranks = read_bpe_ranks(path)
        specials = {NAMED_SPECIALS.get(i, f"<|reserved_special_token_{i}|>"): len(ranks) + i for i in range(256)}
        self.model = tiktoken.Encoding(
            name=os.path.basename(path), pat_str=LLAMA3_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials
        )
        self.bos_id, self.eos_id, self.n_words = len(ranks), len(ranks) + 1, self.model.n_vocab
        logger.info(f"tiktoken ranks {path}: {self.n_words} words, BOS {self.bos_id}, EOS {self.eos_id}")

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        # special-token strings inside the text are ordinary text (encode_ordinary), never control tokens
        pieces = [text[i : i + TIKTOKEN_PIECE_CHARS] for i in range(0, len(text), TIKTOKEN_PIECE_CHARS)]
        ids = [i for piece in self.model.encode_ordinary_batch(pieces) for i in piece]
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def decode(self, ids) -> str:
        return self.model.decode([int(i) for i in ids])


TOKENIZERS = ("bytes", "mock", "sp", "tiktoken", "tokens")


def check_tokenizer_args(name: str, path: str | None) -> None:
    """The checks that need no model loading, so a data loader can fail early on a bad name or path."""
    if name not in TOKENIZERS:
        raise ValueError(f"tokenizer name {name!r}; expected one of {', '.join(TOKENIZERS)}")
    if name in ("sp", "tiktoken") and (path is None or not os.path.isfile(path)):
        raise FileNotFoundError(f"tokenizer path {path!r} is not a file; the {name} tokenizer needs its model file")


def build_tokenizer(name: "str | TokenizerArgs", path: str | None = None, vocab_size: int = 10000):
    """The tokenizer `name` (or the one a TokenizerArgs describes)."""
    if isinstance(name, TokenizerArgs):
        name, path, vocab_size = name.name, name.path, name.vocab_size
    check_tokenizer_args(name, path)
    if name == "bytes":
        return ByteTokenizer()
    if name == "mock":
        return MockTokenizer()
    if name == "tokens":
        return TokenIdTokenizer(vocab_size)
    if name == "sp":
        return SentencePieceTokenizer(path)
    return TikTokenTokenizer(path)
