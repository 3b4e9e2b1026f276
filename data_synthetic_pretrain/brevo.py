"""Brevo: reasoning breadth. The context lists the edges of a random DAG in random order; the query is a node and
the answer is every node it recursively depends on, in an order where parents come first, ending with the query
(spec data.md §2).

Layout: [BOS] + (parent child)* + [9997] + query + [9998] + answer nodes + [9998]; labels are 1 from the first
9998 on. Brevo1 uses node ids 1..N as single tokens; Brevo2 maps every node to a distinct word of 2-4 tokens over
4 symbols. Any topological order of the query's ancestors is a correct answer; the generator draws one by a
reverse Kahn walk with uniformly random picks, as the reference does. Test split: n = N.
"""

from collections import deque
from dataclasses import dataclass

from .common import BOS, draw, make_words, power_law_size, randbelow, split_words

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


def _random_dag(rng, nodes):
    """parents[v] for nodes in generation order: a few roots, then each node picks 1..4 earlier nodes that still
    have fewer than 4 children."""
    roots = 1 + randbelow(rng, (len(nodes) - 1) // 4 + 1)
    parents = {v: [] for v in nodes}
    children = dict.fromkeys(nodes, 0)
    open_nodes = list(nodes[:roots])  # earlier nodes with fewer than 4 children, in generation order
    for v in nodes[roots:]:
        if open_nodes:
            chosen = draw(rng, open_nodes, 1 + randbelow(rng, min(MAX_PARENTS, len(open_nodes))))
            parents[v] = chosen
            for p in chosen:
                children[p] += 1
            if any(children[p] == MAX_CHILDREN for p in chosen):
                open_nodes = [u for u in open_nodes if children[u] < MAX_CHILDREN]
        open_nodes.append(v)
    return parents


def _ancestors(parents, node):
    seen, stack = {node}, [node]
    while stack:
        for p in parents[stack.pop()]:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def brevo_sample(params: BrevoParams, rng, split: str) -> dict:
    n = params.N if split == "test" else power_law_size(rng, params.N)
    nodes = draw(rng, range(1, params.N + 1), n)
    parents = _random_dag(rng, nodes)
    query = nodes[-1]
    needed = _ancestors(parents, query)
    # reverse Kahn from the query: a node becomes ready once all its children inside `needed` are emitted
    pending = {v: 0 for v in needed}
    for v in needed:
        for p in parents[v]:
            pending[p] += 1
    ready, order = [query], []
    while ready:
        v = ready.pop(randbelow(rng, len(ready)))
        order.append(v)
        for p in parents[v]:
            pending[p] -= 1
            if pending[p] == 0:
                ready.append(p)
    order.reverse()
    depth, frontier, seen = 0, deque([(query, 0)]), {query}
    while frontier:
        v, d = frontier.popleft()
        if not parents[v]:
            depth = d
            break
        for p in parents[v]:
            if p not in seen:
                seen.add(p)
                frontier.append((p, d + 1))
    edges = [(p, c) for c in nodes for p in parents[c]]
    edges = draw(rng, edges)
    if params.multi:
        used = sorted({v for edge in edges for v in edge})
        spelled = dict(zip(used, make_words(rng, len(used), WORD_VOCAB, WORD_MIN, WORD_MAX), strict=True))
    else:
        spelled = {v: (v,) for v in nodes}
    context = [BOS] + [t for p, c in edges for t in (*spelled[p], *spelled[c])] + [QUERY, *spelled[query]]
    answer = [ANSWER] + [t for v in order for t in spelled[v]] + [ANSWER]
    meta = {"n": n, "query": query, "answer": order, "depth": depth, "edges": len(edges)}
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
