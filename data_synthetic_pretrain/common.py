"""Pieces shared by the token-level generators: per-sample RNGs, the node-count law, multi-token words, ids."""

import itertools
import math
import random
from functools import cache

BOS = 9999


def sample_rng(generator: str, preset: str, split: str, seed: int, index: int) -> random.Random:
    """The RNG of one sample: a function of (generator, preset, split, seed, index) only, so any sharding or
    number of worker processes produces byte-identical data."""
    return random.Random(f"{generator}|{preset}|{split}|{seed}|{index}")


def randbelow(rng: random.Random, n: int) -> int:
    """Uniform in 0..n-1 from one float draw: several times faster than randrange; the bias (n / 2^53) is far
    below anything a sample set could show."""
    return int(rng.random() * n)


def draw(rng: random.Random, items, k: int | None = None) -> list:
    """k distinct items in random order (all of them, shuffled, when k is None). Few items: a partial
    Fisher-Yates shuffle; many: a sort by random keys (one C-level float per item, much faster in Python)."""
    pool = list(items)
    k = len(pool) if k is None else k
    if 4 * k > len(pool):
        keys = [rng.random() for _ in pool]
        return [pool[i] for i in sorted(range(len(pool)), key=keys.__getitem__)[:k]]
    for i in range(k):
        j = i + randbelow(rng, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


@cache
def _power_law(N: int):
    sizes = range(3, N + 1)
    return sizes, list(itertools.accumulate(1.0 / (n + math.sqrt(N)) for n in sizes))


def power_law_size(rng: random.Random, N: int) -> int:
    """n in {3..N} with P(n) proportional to 1 / (n + sqrt(N)) (the training-set law of Depo and Brevo)."""
    sizes, cumulative = _power_law(N)
    return rng.choices(sizes, cum_weights=cumulative)[0]


def make_words(rng: random.Random, n: int, mini_vocab: int, min_len: int, max_len: int) -> list[tuple[int, ...]]:
    """n distinct self-delimiting words: inner tokens in 1..mini_vocab, the last token in
    mini_vocab+1..2*mini_vocab (so a concatenation splits uniquely at its "high" tokens)."""
    capacity = sum(mini_vocab**length for length in range(min_len, max_len + 1))
    if capacity < n:
        raise ValueError(
            f"cannot make {n} distinct words from mini_vocab={mini_vocab}, lengths {min_len}..{max_len} "
            f"(only {capacity} exist)"
        )
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
