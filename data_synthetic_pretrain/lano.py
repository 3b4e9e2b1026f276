"""Lano: hierarchical structure. Strings sampled from deep, ambiguous, layered context-free grammars (Physics of
LM Part 1, and Lano in Part 4.1): the model must learn to produce strings the grammar derives; a CYK parser
(lano_dp.py) checks them. The grammar type and its JSON format are in lano_grammar.py, the builder of new grammars
in lano_builder.py.

Record layout: [BOS 9999] + string + [eos = |T|+1]; labels 0 on BOS and 1 on every string token and on eos, so the
model also learns where strings end. The eos id is the grammar's own, which is the first column of the next-token
tables of lano_dp.next_token_probs. Presets `<cfg>-tree` also put the parse tree (seq_tree rows, see
lano_grammar.tree_rows) under meta["tree"].
"""

import bisect
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass

from .common import BOS
from .lano_dp import is_member
from .lano_grammar import SHIPPED, Grammar, check_tree, load_grammar, tree_rows

# ---------------------------------------------------------------------------------------------------------------
# Sampling


def derive(grammar: Grammar, rng: random.Random, with_tree: bool = False):
    """(string, levels) of one random derivation with uniform rule choices; levels (only with_tree, else None)
    lists per level the (symbol, rule length) pairs of the parse tree. Both variants draw the same floats in the
    same order, so they give the same string for the same rng."""
    rand, rules = rng.random, grammar.rules
    base, table = grammar.bottom()
    nodes = [grammar.root]
    if not with_tree:
        for _ in range(base):
            nodes = [c for x in nodes for r in (rules[x],) for c in r[int(rand() * len(r))]]
        string = [t for x in nodes for cum, _, tokens in (table[x],) for t in tokens[bisect.bisect(cum, rand())]]
        return string, None
    levels = []
    for _ in range(base):
        chosen = [(x, r[int(rand() * len(r))]) for x in nodes for r in (rules[x],)]
        levels.append([(x, len(rule)) for x, rule in chosen])
        nodes = [c for _, rule in chosen for c in rule]
    subtrees = [table[x][1][bisect.bisect(table[x][0], rand())] for x in nodes]
    for k in range(grammar.depth - base + 1):
        levels.append([pair for subtree in subtrees for pair in subtree[k]])
    return [s for s, _ in levels[-1]], levels


# ---------------------------------------------------------------------------------------------------------------
# The registered generator


@dataclass(frozen=True)
class LanoParams:
    cfg: str  # a shipped config name, or the path of a Lano JSON file
    tree: bool = False  # also store the parse tree under meta["tree"]

    def check(self):
        load_grammar(self.cfg)


class LanoPresets(Mapping):
    """Preset names: a shipped config name (the paper's cfg3b ... cfg3k, or our generated gen3b ... gen3k) or the
    path of a Lano JSON grammar, optionally followed by "-tree" to store the parse tree. Iterating lists
    the shipped names."""

    help = (
        f"a shipped grammar ({', '.join(SHIPPED)}; cfg* are the paper's, gen* ours) or a reference-format JSON "
        "file, optionally with -tree (store the parse tree), e.g. cfg3f, cfg3k-tree or my_grammar.json"
    )

    def __getitem__(self, name: str) -> LanoParams:
        cfg = name.removesuffix("-tree") if isinstance(name, str) else None
        if cfg not in SHIPPED and not (cfg and os.path.isfile(cfg)):
            raise KeyError(name)
        return LanoParams(cfg, tree=name.endswith("-tree"))

    def __iter__(self):
        return iter(SHIPPED)

    def __len__(self):
        return len(SHIPPED)


PRESETS = LanoPresets()


def lano_sample(params: LanoParams, rng, split: str) -> dict:
    """One string (train and test splits are the same distribution; only their seeds differ)."""
    grammar = load_grammar(params.cfg)
    string, levels = derive(grammar, rng, params.tree)
    meta = {"length": len(string)}
    if params.tree:
        meta["tree"] = tree_rows(levels)
    return {"tokens": [BOS, *string, grammar.eos], "labels": [0] + [1] * (len(string) + 1), "meta": meta}


def verify_lano(record: dict) -> str | None:
    """None when the record is a string of its grammar with the right BOS/eos/labels (and a valid parse tree when
    it has one), else the reason. Membership is decided by the CYK parser, not by the sampler."""
    tokens, labels, meta = record["tokens"], record["labels"], record["meta"]
    grammar = load_grammar(meta["params"]["cfg"])
    if len(tokens) < 3 or tokens[0] != BOS or tokens[-1] != grammar.eos:
        return f"expected BOS {BOS} first and eos {grammar.eos} last"
    if labels != [0] + [1] * (len(tokens) - 1):
        return "labels are not 0 on BOS and 1 on the string and eos"
    string = tokens[1:-1]
    if not set(string) <= set(grammar.terminals):
        return f"the string holds ids other than the terminals {grammar.terminals}"
    if not is_member(grammar, string):
        return f"the string is not derived by {meta['params']['cfg']}"
    return check_tree(grammar, meta["tree"], string) if "tree" in meta else None
