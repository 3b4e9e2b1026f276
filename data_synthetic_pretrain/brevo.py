"""Brevo: reasoning breadth. The context lists the edges of a random DAG in random order; the query is a node and
the answer is every node it recursively depends on, in an order where parents come first, ending with the query

Layout: [BOS] + (parent child)* + [9997] + query + [9998] + answer nodes + [9998]; labels are 1 from the first
9998 on. Brevo1 uses node ids 1..N as single tokens; Brevo2 maps every node to a distinct word of 2-4 tokens over
4 symbols. Any topological order of the query's ancestors is a correct answer; the generator draws one by a
reverse Kahn walk with uniformly random picks. Test split: n = N.
"""

from dataclasses import dataclass
from itertools import chain

from .common import BOS, draw, make_words, power_law_size, split_words

QUERY, ANSWER = 9997, 9998
MAX_PARENTS = MAX_CHILDREN = 4
WORD_VOCAB, WORD_MIN, WORD_MAX = 4, 2, 4


@dataclass(frozen=True)
class BrevoParams:
    N: int  # nodes (the maximum in training); node ids are 1..N
    multi: bool = False  # multi-token words instead of single-token ids

    def check(self):
        if not 3 <= self.N < QUERY:
            raise ValueError(f"Brevo N={self.N}; expected 3 <= N < {QUERY}")
        if self.multi and sum(WORD_VOCAB**n for n in range(WORD_MIN, WORD_MAX + 1)) < self.N:
            raise ValueError(f"Brevo N={self.N} needs more distinct words than the multi-token vocabulary has")


PRESETS = {
    **{f"brevo1-{N}": BrevoParams(N) for N in (110, 90, 70)},
    **{f"brevo2-{N}": BrevoParams(N, multi=True) for N in (50, 40, 30)},
}


def _random_dag(rng, n: int) -> tuple[list[list[int]], list[int]]:
    """(parents[v], number of children of v) for nodes 0..n-1 in generation order: a few roots, then each node
    picks 1..4 distinct earlier nodes, uniformly among those that still have fewer than 4 children."""
    random = rng.random
    roots = 1 + int(random() * ((n - 1) // 4 + 1))
    parents = [[] for _ in range(roots)]
    children = [0] * n
    open_nodes = list(range(roots))  # earlier nodes with fewer than 4 children (never empty: v joins after its turn)
    for v in range(roots, n):
        m = len(open_nodes)
        extra = int(random() * (m if m < MAX_PARENTS else MAX_PARENTS))  # parents beyond the first
        picks = [int(random() * m)]
        while len(picks) <= extra:  # distinct picks, by rejection (at most 4, so rarely repeated)
            i = int(random() * m)
            if i not in picks:
                picks.append(i)
        chosen = [open_nodes[i] for i in picks]
        for p in chosen:
            children[p] += 1
            if children[p] == MAX_CHILDREN:
                open_nodes.remove(p)
        parents.append(chosen)
        open_nodes.append(v)
    return parents, children


def brevo_sample(params: BrevoParams, rng, split: str) -> dict:
    n = params.N if split == "test" else power_law_size(rng, params.N)
    nodes = draw(rng, range(1, params.N + 1), n)  # node ids, in generation order (positions 0..n-1 below)
    parents, children = _random_dag(rng, n)
    query = n - 1
    # the query's ancestors, breadth-first: for each the number of its children among them (the in-degrees of the
    # reverse Kahn walk below), and the depth, the fewest parent steps from the query to a root
    pending, needed = [0] * n, [False] * n
    needed[query] = True
    frontier, level, depth = [query], 0, None
    while frontier:
        next_frontier = []
        for v in frontier:
            if depth is None and not parents[v]:
                depth = level
            for p in parents[v]:
                pending[p] += 1
                if not needed[p]:
                    needed[p] = True
                    next_frontier.append(p)
        frontier, level = next_frontier, level + 1
    # reverse Kahn from the query with uniformly random picks: a node is ready once all its needed children are out
    random, ready, order = rng.random, [query], []
    while ready:
        i = int(random() * len(ready))
        ready[i], ready[-1] = ready[-1], ready[i]
        v = ready.pop()
        order.append(v)
        for p in parents[v]:
            pending[p] -= 1
            if pending[p] == 0:
                ready.append(p)
    order.reverse()
    if params.multi:  # a word for every node in an edge (all but the roots without children)
        used = sorted([nodes[v] for v in range(n) if parents[v] or children[v]])
        spelled = dict(zip(used, make_words(rng, len(used), WORD_VOCAB, WORD_MIN, WORD_MAX), strict=True))
        spell = [spelled.get(v) for v in nodes]
    else:
        spell = [(v,) for v in nodes]
    edges = draw(rng, [spell[p] + spell[c] for c in range(n) for p in parents[c]])  # each edge spelled out
    context = [BOS, *chain.from_iterable(edges), QUERY, *spell[query]]
    answer = [ANSWER, *chain.from_iterable([spell[v] for v in order]), ANSWER]
    meta = {"n": n, "query": nodes[query], "answer": [nodes[v] for v in order], "depth": depth, "edges": len(edges)}
    return {"tokens": context + answer, "labels": [0] * len(context) + [1] * len(answer), "meta": meta}


def verify_brevo(record: dict) -> str | None:
    """None when the record is a correct Brevo sample, else the reason. Independent of the generator: it parses
    the edges, and accepts the answer iff it holds exactly the query and its ancestors, each after its parents."""
    tokens, labels, multi = record["tokens"], record["labels"], record["meta"]["params"]["multi"]
    if len(labels) != len(tokens) or tokens[:1] != [BOS] or tokens[-1:] != [ANSWER]:
        return "missing BOS / final 9998, or labels of a different length"
    try:
        q_at = tokens.index(QUERY)
        a_at = tokens.index(ANSWER, q_at)
    except ValueError:
        return "missing query or answer marker"
    parts = tokens[1:q_at], tokens[q_at + 1 : a_at], tokens[a_at + 1 : -1]
    try:
        edge_nodes, query, answer = (split_words(p, WORD_VOCAB) if multi else [(t,) for t in p] for p in parts)
    except ValueError as error:
        return str(error)
    if len(edge_nodes) % 2 or len(query) != 1:
        return "odd number of edge endpoints or a query that is not one node"
    parents = {}
    for p, c in zip(edge_nodes[0::2], edge_nodes[1::2], strict=True):
        parents.setdefault(c, set()).add(p)
    needed, stack = {query[0]}, [query[0]]
    while stack:
        for p in parents.get(stack.pop(), ()):
            if p not in needed:
                needed.add(p)
                stack.append(p)
    if len(answer) != len(set(answer)) or set(answer) != needed:
        return "answer is not exactly the query and its ancestors"
    position = {v: i for i, v in enumerate(answer)}
    if any(position[p] > position[v] for v in answer for p in parents.get(v, ())):
        return "answer lists a node before one of its parents"
    return None if labels == [0] * a_at + [1] * (len(tokens) - a_at) else "labels are not 1 exactly from the answer"
