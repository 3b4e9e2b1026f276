"""Dynamic programs over Lano grammars : membership and one parse tree, the exact number of
parses, the minimum number of token substitutions that makes a string valid, and the exact next-token
distribution (ground truth for entropy and KL).

All of them are CYK over spans: for every symbol of a level, an (L+1) x (L+1) table over (start, end) positions,
computed level by level from the terminals up. A rule's table is the product of its children's tables in a
semiring (boolean, counting modulo a prime, log-probability, min-plus); products run as dense matrix products on
blocks of rows, cut to the span lengths each symbol can derive (CYK with binarised rules, vectorised over start
positions). Rules sharing a prefix share its product. Membership takes about 0.2 s and 100 MB for 1000 tokens.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from .lano_grammar import Grammar, load_grammar, tree_rows

BLOCK = 128  # rows per block of a table product
_THREADS = ThreadpoolController()


def _one_blas_thread(function):
    """Run with a single BLAS thread: the products are small blocks, for which thread hand-offs cost more than
    they save (tens of times more on a loaded machine); parallelism belongs to worker processes."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _THREADS.limit(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return wrapper


def _length_bounds(grammar: Grammar) -> dict:
    """symbol -> (shortest, longest) string it derives."""
    bounds = {t: (1, 1) for t in grammar.terminals}
    for level in reversed(grammar.levels[:-1]):
        for s in level:
            spans = [(sum(bounds[c][0] for c in rule), sum(bounds[c][1] for c in rule)) for rule in grammar.rules[s]]
            bounds[s] = (min(lo for lo, _ in spans), max(hi for _, hi in spans))
    return bounds


def _blocks(rows: int, n: int, band_a: tuple, band_b: tuple):
    """Row, middle and column slices of A @ B (A: rows x n, B: n x n) where A[i, k] is zero unless k - i is in
    band_a and B[k, j] unless j - k is in band_b."""
    for r0 in range(0, rows, BLOCK):
        r1 = min(rows, r0 + BLOCK)
        k0, k1 = r0 + band_a[0], min(n, r1 + band_a[1])
        j0, j1 = k0 + band_b[0], min(n, k1 + band_b[1])
        if j0 >= n:
            break
        if k0 < k1 and j0 < j1:
            yield slice(r0, r1), slice(k0, k1), slice(j0, j1)


class _Boolean:
    """Derivability: 0/1 in float32, so products run on BLAS (counts up to L are exact, then clipped to 1)."""

    zero, one, dtype = 0.0, 1.0, np.float32

    def compose(self, A, B, band_a, band_b):
        C = np.zeros(A.shape, A.dtype)
        for r, k, j in _blocks(*A.shape, band_a, band_b):
            np.minimum(A[r, k] @ B[k, j], 1.0, out=C[r, j])
        return C

    def vecmat(self, v, M):
        return np.minimum(v @ M, 1.0)

    def derivations(self, count: int, probability: float):
        return 1.0

    def times(self, x, y):
        return x * y

    def plus(self, A, B):
        return np.maximum(A, B)

    def weight(self, A, rules: int):
        return A


@dataclass
class _Modular:
    """Parse counts modulo a prime p with L p^2 < 2^53, so float64 products are exact."""

    p: int
    zero, one, dtype = 0.0, 1.0, np.float64

    def compose(self, A, B, band_a, band_b):
        C = np.zeros_like(A)
        for r, k, j in _blocks(*A.shape, band_a, band_b):
            C[r, j] = np.fmod(A[r, k] @ B[k, j], self.p)
        return C

    def vecmat(self, v, M):
        return np.fmod(v @ M, self.p)

    def derivations(self, count: int, probability: float):
        return float(count % self.p)

    def plus(self, A, B):
        return np.fmod(A + B, self.p)

    def weight(self, A, rules: int):
        return A


@dataclass
class _Log:
    """Natural logs of sums over parses of the product of rule weights (1/#rules of the parent for probabilities,
    1 for counts); -inf where nothing derives the span.

    A product exponentiates each block after shifting A's rows and B's columns to their maxima, and after tilting
    both by rho per token (the telescoping scale rho*(end-start) keeps entries of different span lengths comparable).
    The few sums that still fall below exp(-600) of the shift, where float64 loses digits, are recomputed exactly."""

    probabilities: bool
    zero, one, dtype = -np.inf, 0.0, np.float64

    def compose(self, A, B, band_a, band_b):
        length_a, length_b = _span_lengths(A.shape), _span_lengths(B.shape)
        finite = np.isfinite(A)
        rho = -float(np.mean(A[finite] / np.maximum(length_a[finite], 1))) if finite.any() else 0.0
        A, B = A + rho * length_a, B + rho * length_b
        C = np.full_like(A, -np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for r, k, j in _blocks(*A.shape, band_a, band_b):
                a, b = A[r, k], B[k, j]
                ma, mb = _finite_max(a, 1), _finite_max(b, 0)
                shift = ma[:, None] + mb[None, :]
                c = np.log(np.exp(a - ma[:, None]) @ np.exp(b - mb[None, :])) + shift
                weak = ~(c > shift - 600)
                if weak.any():
                    weak &= (np.isfinite(a).astype(np.float32) @ np.isfinite(b).astype(np.float32)) > 0
                    xs, ys = np.nonzero(weak)
                    for chunk in range(0, len(xs), 1024):  # exact logsumexp over the split points
                        x, y = xs[chunk : chunk + 1024], ys[chunk : chunk + 1024]
                        terms = a[x] + b[:, y].T
                        top = _finite_max(terms, 1)
                        c[x, y] = np.log(np.exp(terms - top[:, None]).sum(1)) + top
                C[r, j] = c
        return C - rho * length_a

    def vecmat(self, v, M):
        return _log_vector_matrix(v, M)

    def derivations(self, count: int, probability: float):
        return math.log(probability if self.probabilities else count)

    def plus(self, A, B):
        return np.logaddexp(A, B)

    def weight(self, A, rules: int):
        return A - math.log(rules) if self.probabilities else A


@dataclass
class _MinPlus:
    """Fewest substituted tokens over parses (inf where no string of that length derives)."""

    zero, one, dtype = np.inf, 0.0, np.float64

    def compose(self, A, B, band_a, band_b):
        C = np.full_like(A, np.inf)
        for r, k, j in _blocks(*A.shape, band_a, band_b):
            a, b, c = A[r, k], B[k, j], C[r, j]
            for m in range(0, a.shape[1], 16):  # 16 split points at a time bounds the broadcast's memory
                np.minimum(c, np.min(a[:, m : m + 16, None] + b[None, m : m + 16, :], axis=1), out=c)
        return C

    def vecmat(self, v, M):
        return np.min(v[:, None] + M, axis=0)

    def times(self, x, y):
        return x + y

    def plus(self, A, B):
        return np.minimum(A, B)

    def weight(self, A, rules: int):
        return A


def _span_lengths(shape):
    """end - start for every entry of a table over (start, end) positions."""
    return np.arange(shape[1])[None, :] - np.arange(shape[0])[:, None]


def _finite_max(x, axis):
    m = np.max(x, axis=axis, initial=-np.inf)
    return np.where(np.isfinite(m), m, 0.0)


def _leaves(grammar: Grammar, seq, ring, mismatch=None) -> dict:
    """The terminal tables: terminal t spans [i, i+1] with weight `one` where seq[i] == t (else `mismatch`, by
    default impossible)."""
    n = len(seq) + 1
    positions = np.arange(n - 1)
    tables = {}
    for t in grammar.terminals:
        table = np.full((n, n), ring.zero, dtype=ring.dtype)
        table[positions, positions + 1] = np.where(
            np.asarray(seq) == t, ring.one, ring.zero if mismatch is None else mismatch
        )
        tables[t] = table
    return tables


def _subtree_leaves(grammar: Grammar, seq, ring) -> tuple[int, dict]:
    """(B, tables of level B) straight from the string: every level-B symbol derives few short strings (the
    sampler's subtree table), so a dictionary lookup of each substring replaces the products of levels D-1..B."""
    base, _ = grammar.bottom()
    n = len(seq) + 1
    tables = {s: np.full((n, n), ring.zero, dtype=ring.dtype) for s in grammar.levels[base]}
    derivations = grammar.substrings()
    for length in sorted({len(tokens) for tokens in derivations}):
        for i in range(n - length):
            for symbol, (count, probability) in derivations.get(tuple(seq[i : i + length]), {}).items():
                tables[symbol][i, i + length] = ring.derivations(count, probability)
    return base, tables


def _tables(grammar: Grammar, leaves: dict, ring, top: int = 0, base: int | None = None) -> list:
    """tables[a][symbol] for the levels top..base (others are None), bottom up from the given level-`base` tables
    (default: the terminals)."""
    bounds = _length_bounds(grammar)
    tables = [None] * (grammar.depth + 1)
    base = grammar.depth if base is None else base
    tables[base] = leaves
    for a in range(base - 1, top - 1, -1):
        below, products = tables[a + 1], {}
        level = {}
        for s in grammar.levels[a]:
            total = None
            for rule in grammar.rules[s]:
                table = ring.weight(_product(ring, below, bounds, products, rule)[0], len(grammar.rules[s]))
                total = table if total is None else ring.plus(total, table)
            level[s] = total
        tables[a] = level
    return tables


def _product(ring, below: dict, bounds: dict, products: dict, prefix: tuple):
    """The table of a rule prefix and its span-length band; products caches them across the rules of a level."""
    if len(prefix) == 1:
        return below[prefix[0]], bounds[prefix[0]]
    if prefix not in products:
        head, band = _product(ring, below, bounds, products, prefix[:-1])
        last = bounds[prefix[-1]]
        table = ring.compose(head, below[prefix[-1]], band, last)
        products[prefix] = table, (band[0] + last[0], band[1] + last[1])
    return products[prefix]


def _check_string(grammar: Grammar, seq) -> list:
    seq = [int(t) for t in seq]
    terminals = set(grammar.terminals)
    bad = [t for t in seq if t not in terminals]
    if not seq or bad:
        raise ValueError(
            f"Lano string {'is empty' if not seq else f'holds {bad[0]}'}; expected terminal ids "
            f"{min(terminals)}..{max(terminals)} (without BOS/eos)"
        )
    return seq


class _Chart:
    """The span tables of one string in one semiring. Levels cut..D are stored; the levels above (the root and
    level 1, whose products are the widest) are never tabulated: pushing a row vector v through a symbol,
    v -> v T_symbol, expands them into their rules, which costs O(L^2) per stored table touched instead of a
    matrix product per rule prefix. Vectors cover a window of positions [lo, lo + len(v)).

    With `subtrees` (membership and counting, which only need the root's value), the levels below the sampler's
    subtree level B are not tabulated either: level B comes from substring lookups."""

    @_one_blas_thread
    def __init__(self, grammar: Grammar, seq: list, ring, mismatch=None, subtrees: bool = False):
        self.grammar, self.ring, self.n = grammar, ring, len(seq) + 1
        self.cut = min(2, grammar.depth)
        if subtrees and grammar.bottom()[0] >= self.cut:
            base, leaves = _subtree_leaves(grammar, seq, ring)
        else:
            base, leaves = grammar.depth, _leaves(grammar, seq, ring, mismatch)
        self.tables = _tables(grammar, leaves, ring, top=self.cut, base=base)

    def unit(self, i: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        v = np.full((self.n if hi is None else hi + 1) - lo, self.ring.zero, dtype=self.ring.dtype)
        v[i - lo] = self.ring.one
        return v

    def row(self, a: int, symbol: int, v, lo: int = 0):
        """v T_symbol on the window starting at lo (v's value at position k: paths that end at k)."""
        if a >= self.cut:
            return self.ring.vecmat(v, self.tables[a][symbol][lo : lo + len(v), lo : lo + len(v)])
        total = None
        for rule in self.grammar.rules[symbol]:
            w = v
            for child in rule:
                w = self.row(a + 1, child, w, lo)
            w = self.ring.weight(w, len(self.grammar.rules[symbol]))
            total = w if total is None else self.ring.plus(total, w)
        return total

    def column(self, a: int, symbol: int, u, lo: int = 0):
        """T_symbol u on the window starting at lo (u's value at position k: paths that start at k)."""
        if a >= self.cut:
            return self.ring.vecmat(u, self.tables[a][symbol][lo : lo + len(u), lo : lo + len(u)].T)
        total = None
        for rule in self.grammar.rules[symbol]:
            w = u
            for child in reversed(rule):
                w = self.column(a + 1, child, w, lo)
            w = self.ring.weight(w, len(self.grammar.rules[symbol]))
            total = w if total is None else self.ring.plus(total, w)
        return total

    @_one_blas_thread
    def whole(self):
        """The root's value on the whole string."""
        return self.row(0, self.grammar.root, self.unit(0))[-1]

    def backtrack(self, same):
        """One parse of the whole string that attains the root's value: per level, the (symbol, rule length) pairs
        and the spans of the chosen tree's nodes, left to right. same(x, y) compares two semiring values."""
        grammar, ring = self.grammar, self.ring
        levels = [[] for _ in range(grammar.depth + 1)]
        spans = [[] for _ in range(grammar.depth + 1)]

        def visit(a, symbol, i, j):
            spans[a].append((i, j))
            if a == grammar.depth:
                levels[a].append((symbol, 0))
                return
            value = self.row(a, symbol, self.unit(i, i, j), i)[-1]
            for rule in grammar.rules[symbol]:
                reach = [self.unit(i, i, j)]  # reach[m][k - i]: the first m children derive [i, k]
                for child in rule:
                    reach.append(self.row(a + 1, child, reach[-1], i))
                if not same(ring.weight(reach[-1][-1:], len(grammar.rules[symbol]))[0], value):
                    continue
                bounds = [j]
                for m in range(len(rule) - 1, -1, -1):  # walk back: a split k that still attains reach
                    tail = self.column(a + 1, rule[m], self.unit(bounds[-1], i, j), i)
                    k = np.flatnonzero(same(ring.times(reach[m], tail), reach[m + 1][bounds[-1] - i]))[0]
                    bounds.append(i + int(k))
                bounds.reverse()
                levels[a].append((symbol, len(rule)))
                for child, start, stop in zip(rule, bounds, bounds[1:], strict=False):
                    visit(a + 1, child, start, stop)
                return
            raise AssertionError(f"no rule of {symbol} attains its value on [{i}, {j}]")

        visit(0, grammar.root, 0, self.n - 1)
        return levels, spans


# ---------------------------------------------------------------------------------------------------------------
# Membership, one parse tree, the number of parses


@_one_blas_thread
def is_member(grammar, seq) -> bool:
    """Whether the grammar derives the token list `seq` (terminal ids, no BOS/eos)."""
    grammar = load_grammar(grammar)
    seq = _check_string(grammar, seq)
    if len(seq) > _length_bounds(grammar)[grammar.root][1]:
        return False
    return bool(_Chart(grammar, seq, _Boolean(), subtrees=True).whole() > 0)


@dataclass
class Parse:
    member: bool
    tree: list | None  # seq_tree rows of one parse (None when not a member)
    parses: int | None  # the exact number of parse trees (None when not requested)


@_one_blas_thread
def parse(grammar, seq, count: bool = True) -> Parse:
    """Membership, one parse tree (seq_tree rows) and, with `count`, the exact number of parse trees."""
    grammar = load_grammar(grammar)
    seq = _check_string(grammar, seq)
    chart = _Chart(grammar, seq, _Boolean())
    if chart.whole() == 0:
        return Parse(False, None, 0 if count else None)
    levels, _ = chart.backtrack(lambda x, y: (x > 0) == (y > 0))
    return Parse(True, tree_rows(levels), count_parses(grammar, seq) if count else None)


@_one_blas_thread
def count_parses(grammar, seq) -> int:
    """The exact number of parse trees of `seq` (0 when it is not a member). The counting DP runs modulo a few
    primes and the integer is rebuilt by the Chinese remainder theorem; how many primes comes from a float64
    log-count plus a 64-bit margin."""
    grammar = load_grammar(grammar)
    seq = _check_string(grammar, seq)
    log_count = _Chart(grammar, seq, _Log(probabilities=False), subtrees=True).whole()
    if not np.isfinite(log_count):
        return 0
    primes, modulus = [], 1
    for p in _primes_below(math.isqrt(2**53 // (len(seq) + 1))):
        primes.append(p)
        modulus *= p
        if modulus.bit_length() > log_count / math.log(2) + 64:
            break
    count = 0
    for p in primes:
        residue = int(_Chart(grammar, seq, _Modular(p), subtrees=True).whole())
        others = modulus // p
        count += residue * others * pow(others, -1, p)
    return count % modulus


def _primes_below(n: int):
    """Primes below n, largest first."""
    for candidate in range(n - 1 if n % 2 == 0 else n - 2, 2, -2):
        if all(candidate % d for d in range(3, math.isqrt(candidate) + 1, 2)):
            yield candidate


# ---------------------------------------------------------------------------------------------------------------
# Fewest substitutions ("DP statistics")


@dataclass
class Substitutions:
    best: int | None  # fewest substituted tokens that make the string valid (None: no string of this length)
    changed: list | None  # per level, terminals first and the root last: nodes of the returned tree whose span
    #                       holds a substituted token
    string: list | None  # the closest valid string (the returned tree's leaves)
    tree: list | None  # its seq_tree rows


@_one_blas_thread
def min_substitutions(grammar, seq) -> Substitutions:
    """The fewest token substitutions (no insertions or deletions) that turn `seq` into a string of the grammar,
    with one closest valid string, its parse and the per-level counts of nodes touched by a substitution."""
    grammar = load_grammar(grammar)
    seq = _check_string(grammar, seq)
    chart = _Chart(grammar, seq, _MinPlus(), mismatch=1.0)
    best = chart.whole()
    if not np.isfinite(best):
        return Substitutions(None, None, None, None)
    levels, spans = chart.backtrack(lambda x, y: x == y)
    string = [s for s, _ in levels[-1]]
    changed_at = np.cumsum([0] + [a != b for a, b in zip(string, seq, strict=True)])
    changed = [sum(int(changed_at[j] > changed_at[i]) for i, j in level) for level in reversed(spans)]
    return Substitutions(int(best), changed, string, tree_rows(levels))


# ---------------------------------------------------------------------------------------------------------------
# Next-token probabilities and the KL recipe of demo2


@_one_blas_thread
def next_token_probs(grammar, seq) -> tuple[np.ndarray, np.ndarray]:
    """(probs, chosen) under uniform rule choices. probs has len(seq)+1 rows [P(eos), P(t) for each terminal t]:
    row k is the distribution of what follows seq[:k] (row 0: the first token); chosen[k] is the probability of
    seq[k] in row k, and chosen[-1] that of eos after the whole string. Exact up to float64 rounding.

    Row k is proportional to [P(string = seq[:k]), P(seq[:k] is followed by t)]: the first is the root's inside
    probability on [0, k]; the second is the prefix probability of terminal t at position k, computed top down:
    a level-(a+1) node starts at j with the mass of its parent starting at i times the inside probability of its
    left siblings on [i, j]. Every prefix of seq must be a prefix of some string of the grammar."""
    grammar = load_grammar(grammar)
    seq = _check_string(grammar, seq)
    chart = _Chart(grammar, seq, _Log(probabilities=True))
    starts = {grammar.root: chart.unit(0)}  # log P(prefix seq[:i] and a node of this symbol starts at i)
    for a in range(grammar.depth):
        below = dict.fromkeys(grammar.levels[a + 1], np.full(chart.n, -np.inf))
        for symbol in grammar.levels[a]:
            for rule in grammar.rules[symbol]:
                mass = starts[symbol] - math.log(len(grammar.rules[symbol]))
                for m, child in enumerate(rule):
                    below[child] = np.logaddexp(below[child], mass)
                    if m + 1 < len(rule):
                        mass = chart.row(a + 1, child, mass)
        starts = below
    ends = chart.row(0, grammar.root, chart.unit(0))  # log P(string = seq[:k])
    log_rows = np.column_stack([ends, *(starts[t] for t in grammar.terminals)])
    totals = np.logaddexp.reduce(log_rows, axis=1)
    if not np.all(np.isfinite(totals)):
        k = int(np.flatnonzero(~np.isfinite(totals))[0])
        raise ValueError(f"the first {k} tokens of the string are not a prefix of any string of the grammar")
    probs = np.exp(log_rows - totals[:, None])
    column = {t: c for c, t in enumerate(grammar.terminals, 1)}
    chosen = np.append(probs[np.arange(len(seq)), [column[t] for t in seq]], probs[-1, 0])
    return probs, chosen


def _log_vector_matrix(v, M):
    """log sum_i exp(v[i] + M[i, j]) for every j, exactly (one max shift per column)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = v[:, None] + M
        top = _finite_max(terms, 0)
        return np.log(np.sum(np.exp(terms - top[None, :]), axis=0)) + top


def kl_divergence(p, q, eps: float = 1e-5) -> float:
    """demo2's recipe: mean over rows of sum_v p(v) (log p'(v) - log q'(v)), where p' and q' are p + eps and
    q + eps renormalised (p: ground-truth rows from next_token_probs, q: the model's [eos, terminals] softmax)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"KL needs two tables of the same (rows, 1 + terminals) shape, got {p.shape} and {q.shape}")
    smooth_p, smooth_q = p + eps, q + eps
    smooth_p /= smooth_p.sum(1, keepdims=True)
    smooth_q /= smooth_q.sum(1, keepdims=True)
    return float(np.mean(np.sum(p * (np.log(smooth_p) - np.log(smooth_q)), axis=1)))
