"""Depo: reasoning depth. The context lists the edges of a hidden cycle of words in random order; each query asks
for the word k steps after a given word.

Layout: [BOS] + (word_a word_b)* + ([9000 + k] + word_s + [9500] + word_{s+k})*; labels are 1 on every 9500 and
on every answer token (the targets), 0 elsewhere. Test split: n = N and k in {1, 2, 4, ..., K} (K itself added
when it is not a power of two).
"""

from dataclasses import dataclass
from functools import cache

from .common import BOS, draw, make_words, power_law_size, split_words

HOP, ANSWER, SEPARATOR = 9000, 9500, 9700


@dataclass(frozen=True)
class DepoParams:
    N: int  # nodes (the maximum in training)
    K: int  # maximum hop count
    M: int = 10  # queries per sample
    mini_vocab: int = 3
    min_tlen: int = 5
    max_tlen: int = 7
    separator: bool = False

    def check(self):
        if self.N < 3:
            raise ValueError(f"Depo N={self.N}; expected N >= 3")
        if not 1 <= self.K < ANSWER - HOP:
            raise ValueError(f"Depo K={self.K}; expected 1 <= K < {ANSWER - HOP}")
        if self.M < 1:
            raise ValueError(f"Depo M={self.M}; expected M >= 1")
        if not 1 <= self.min_tlen <= self.max_tlen or not 1 <= self.mini_vocab < HOP // 2:
            raise ValueError(f"Depo word shape mini_vocab={self.mini_vocab}, tlen {self.min_tlen}..{self.max_tlen}")
        if sum(self.mini_vocab**n for n in range(self.min_tlen, self.max_tlen + 1)) < self.N:
            raise ValueError(f"Depo N={self.N} needs more distinct words than mini_vocab/tlen allow")


PRESETS = {
    **{f"depo1-{N}": DepoParams(N, K=8, mini_vocab=50, min_tlen=1, max_tlen=2) for N in (375, 300, 225)},
    **{f"depo2-{N}": DepoParams(N, K=16, mini_vocab=3, min_tlen=5, max_tlen=7) for N in (125, 100, 75)},
    # a miniature of Depo1 that a tiny model learns on a CPU in minutes (used by `make demo`)
    "depo1-mini": DepoParams(8, K=2, mini_vocab=50, min_tlen=1, max_tlen=2),
    # `make demo`'s task: one-hop lookups in an 8-word cycle of one-token words, which a 4-layer, 64-wide LlamaCanon
    # solves in a few CPU minutes and the same Llama does not (the demo README has the settings tried)
    "depo-demo": DepoParams(8, K=1, mini_vocab=50, min_tlen=1, max_tlen=1),
}


@cache
def eval_hops(K: int) -> list[int]:
    hops = [2**i for i in range(K.bit_length()) if 2**i <= K]
    return hops if hops[-1] == K else hops + [K]


def depo_sample(params: DepoParams, rng, split: str) -> dict:
    n = params.N if split == "test" else power_law_size(rng, params.N)
    words = draw(rng, make_words(rng, n, params.mini_vocab, params.min_tlen, params.max_tlen))  # the cycle, in order
    edge = (SEPARATOR,) if params.separator else ()
    tokens = [BOS, *[t for i in draw(rng, range(n)) for t in edge + words[i] + words[(i + 1) % n]]]
    labels = [0] * len(tokens)
    random, queries = rng.random, []
    hops = range(1, params.K + 1) if split == "train" else eval_hops(params.K)
    for start in draw(rng, range(n), min(n, params.M)):
        k = hops[int(random() * len(hops))]
        end = (start + k) % n
        question, answer = words[start], words[end]
        tokens += (HOP + k, *question, ANSWER, *answer)
        labels += [0] * (1 + len(question)) + [1] * (1 + len(answer))
        queries.append({"k": k, "start": start, "answer": end})
    return {"tokens": tokens, "labels": labels, "meta": {"n": n, "queries": queries}}


def verify_depo(record: dict) -> str | None:
    """None when the record is a correct Depo sample, else the reason. Independent of the generator: it parses
    the context into a successor map, checks it is one cycle over all words and walks it for every query."""
    tokens, labels, params = record["tokens"], record["labels"], record["meta"]["params"]
    mini_vocab = params["mini_vocab"]
    if len(labels) != len(tokens) or tokens[:1] != [BOS]:
        return "missing BOS or labels of a different length"
    first_query = next((i for i, t in enumerate(tokens) if HOP < t < ANSWER), None)
    if first_query is None:
        return "no query"
    context = [t for t in tokens[1:first_query] if t != SEPARATOR]
    try:
        words = split_words(context, mini_vocab)
    except ValueError as error:
        return str(error)
    if len(words) % 2:
        return "odd number of context words"
    successor = dict(zip(words[0::2], words[1::2], strict=True))
    if len(successor) != len(words) // 2 or set(successor.values()) != set(successor):
        return "context edges do not form a permutation"
    node, steps = next(iter(successor)), 0
    while True:
        node, steps = successor[node], steps + 1
        if node == next(iter(successor)):
            break
    if steps != len(successor):
        return "context is not a single cycle"
    i = first_query
    expected_labels = [0] * first_query
    while i < len(tokens):
        k = tokens[i] - HOP
        try:
            end = tokens.index(ANSWER, i)
            nxt = next((j for j in range(end + 1, len(tokens)) if HOP < tokens[j] < ANSWER), len(tokens))
            (start,), (answer,) = (
                split_words(tokens[i + 1 : end], mini_vocab),
                split_words(tokens[end + 1 : nxt], mini_vocab),
            )
        except ValueError:
            return f"malformed query at position {i}"
        node = start
        for _ in range(k):
            node = successor.get(node)
        if node != answer:
            return f"query at position {i}: {k} hops from {start} is {node}, not {answer}"
        expected_labels += [0] * (end - i) + [1] * (nxt - end)
        i = nxt
    return None if expected_labels == labels else "labels are not 1 exactly on the answer markers and words"
