"""Pieces shared by the token-level generators: per-sample randomness, the node-count law, multi-token words, ids."""

import hashlib
import itertools
import math
import random
from bisect import bisect
from functools import cache

BOS = 9999


def sample_rng(generator: str, preset: str, split: str, seed: int, index: int) -> random.Random:
    """The RNG of one sample: a function of (generator, preset, split, seed, index) only, so any sharding or
    number of worker processes produces byte-identical data."""
    return random.Random(f"{generator}|{preset}|{split}|{seed}|{index}")


def sample_hash(generator: str, preset: str, split: str, seed: int, index: int):
    """The randomness of one sample as a blake2b state fed with (generator, preset, split, seed, index), for
    generators that need only a few hundred random bits (`random_bits`): several times cheaper than seeding a
    Mersenne Twister, which costs about 5 microseconds."""
    h = _hash_prefix(generator, preset, split, seed).copy()
    h.update(b"%d|" % index)
    return h


@cache
def _hash_prefix(generator: str, preset: str, split: str, seed: int):
    return hashlib.blake2b(f"{generator}|{preset}|{split}|{seed}|".encode(), digest_size=64)


def random_bits(state, stream: int, bits: int) -> int:
    """A uniform integer below 2^bits (bits rounded up to a whole byte), number `stream` of the sample `state`
    (`sample_hash`): concatenated blake2b digests of the state (stream 0, block 0) or of the state and
    (stream, block). Digits read off it by repeated divmod are uniform up to (product of the radices) / 2^bits,
    so callers ask for 64 bits more than they use."""
    digests = [state.digest()] if stream == 0 else []
    for block in range(len(digests), -(-bits // 512)):
        h = state.copy()
        h.update(b"%d|%d" % (stream, block))
        digests.append(h.digest())
    return int.from_bytes(b"".join(digests)[: -(-bits // 8)], "little")


def draw(rng: random.Random, items, k: int | None = None) -> list:
    """k distinct items in random order (all of them, shuffled, when k is None). Up to 4/5 of the items: a partial
    Fisher-Yates shuffle; more: a sort by random keys (one C-level float per item, cheaper than a swap in Python).
    Uniform integers below n come from one float draw, int(random() * n): the bias (n / 2^53) is far below
    anything a sample set could show."""
    pool = list(items)
    size = len(pool)
    k = size if k is None else k
    random = rng.random
    if 5 * k > 4 * size:
        keys = [random() for _ in pool]
        return [pool[i] for i in sorted(range(size), key=keys.__getitem__)[:k]]
    for i in range(k):
        j = i + int(random() * (size - i))
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


@cache
def _power_law(N: int) -> list[float]:
    return list(itertools.accumulate(1.0 / (n + math.sqrt(N)) for n in range(3, N + 1)))


def power_law_size(rng: random.Random, N: int) -> int:
    """n in {3..N} with P(n) proportional to 1 / (n + sqrt(N)) (the training-set law of Depo and Brevo)."""
    cumulative = _power_law(N)
    return 3 + bisect(cumulative, rng.random() * cumulative[-1], 0, len(cumulative) - 1)


def make_words(rng: random.Random, n: int, mini_vocab: int, min_len: int, max_len: int) -> list[tuple[int, ...]]:
    """n distinct self-delimiting words: inner tokens in 1..mini_vocab, the last token in
    mini_vocab+1..2*mini_vocab (so a concatenation splits uniquely at its "high" tokens)."""
    capacity = _word_capacity(mini_vocab, min_len, max_len)
    if capacity < n:
        raise ValueError(
            f"cannot make {n} distinct words from mini_vocab={mini_vocab}, lengths {min_len}..{max_len} "
            f"(only {capacity} exist)"
        )
    table = _word_table(mini_vocab, min_len, max_len)
    if table is not None:  # one float per word; a dict keeps the first occurrence of each word, in order
        random, size = rng.random, len(table)
        found = {}
        while len(found) < n:
            found.update(dict.fromkeys([table[int(random() * size)] for _ in range(n - len(found))]))
        return list(found)
    words: list[tuple[int, ...]] = []
    seen = set()
    symbols = range(1, mini_vocab + 1)
    while len(words) < n:  # draw the missing words in one batch, drop duplicates, repeat
        lengths = rng.choices(range(min_len, max_len + 1), k=n - len(words))
        tokens = rng.choices(symbols, k=sum(lengths))
        start = 0
        for length in lengths:
            word = tuple(tokens[start : start + length - 1]) + (tokens[start + length - 1] + mini_vocab,)
            start += length
            if word not in seen and len(words) < n:
                seen.add(word)
                words.append(word)
    return words


@cache
def _word_capacity(mini_vocab: int, min_len: int, max_len: int) -> int:
    return sum(mini_vocab**length for length in range(min_len, max_len + 1))


@cache
def _word_table(mini_vocab: int, min_len: int, max_len: int) -> list[tuple[int, ...]] | None:
    """Every word, repeated mini_vocab^(max_len - length) times, so that a uniform index into the table draws a
    uniform length and then uniform tokens; None when it would be too large (then words are drawn token by token)."""
    lengths = max_len - min_len + 1
    if lengths * mini_vocab**max_len > 1 << 16:
        return None
    table = []
    for length in range(min_len, max_len + 1):
        for inner in itertools.product(range(1, mini_vocab + 1), repeat=length - 1):
            for last in range(mini_vocab + 1, 2 * mini_vocab + 1):
                table += [(*inner, last)] * mini_vocab ** (max_len - length)
    return table


def split_words(tokens, mini_vocab: int) -> list[tuple[int, ...]]:
    """Cut a concatenation of `make_words` words back into words (each ends at its first token > mini_vocab)."""
    words, current = [], []
    for token in tokens:
        current.append(token)
        if token > mini_vocab:
            words.append(tuple(current))
            current = []
    if current:
        raise ValueError(f"token run {current} does not end with a word-final token (> {mini_vocab})")
    return words
