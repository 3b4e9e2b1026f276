"""Lano grammars: the layered grammar type, its parse trees as rows, and the JSON config format.

Grammar model: levels 0..D; level 0 is the root, level D the terminals, and every rule of a level-a symbol is a
sequence of level-(a+1) symbols, so every parse tree has exactly D levels of expansion. Ids: terminals 1..|T|, then
eos/mask/sep = |T|+1..|T|+3, then the non-terminals level by level from D-1 up to the root (the largest id). The
JSON config format is the one the paper's grammars were published in, so those files load unchanged.
"""

import itertools
import json
import math
import os
from dataclasses import dataclass
from functools import cache

from .atomic import atomic_output

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lano_configs")
RESERVED = 3  # eos, mask, sep: the ids between the terminals and the non-terminals
MAX_SUBTREES = 4096  # per symbol, for the one-draw-per-subtree sampling table


@dataclass(frozen=True, eq=False)
class Grammar:
    levels: tuple  # symbol ids per level, root level first, terminal level last
    rules: dict  # non-terminal id -> tuple of rules, each a tuple of child ids
    config: dict  # everything else of the JSON config (generation parameters, token ids, seed)

    @property
    def depth(self) -> int:
        return len(self.levels) - 1

    @property
    def root(self) -> int:
        return self.levels[0][0]

    @property
    def terminals(self) -> tuple:
        return self.levels[-1]

    @property
    def eos(self) -> int:
        return self.config.get("eos_token", len(self.terminals) + 1)

    @cache  # noqa: B019 (grammars are few and live as long as the process)
    def bottom(self) -> tuple:
        """(B, table): sampling draws one rule per node down to level B, then one float per level-B node picks a
        whole subtree; table[symbol] = (cumulative probabilities, subtrees as _expansions levels, their tokens).
        B = D-2 (subtrees of two levels) unless that makes a table too large."""
        base = max(0, self.depth - 2)
        while base < self.depth and max(_count_subtrees(self, s) for s in self.levels[base]) > MAX_SUBTREES:
            base += 1
        table = {}
        for symbol in self.levels[base]:
            expansions = _expansions(self, symbol)
            cumulative = list(itertools.accumulate(p for p, _ in expansions))
            cumulative[-1] = 2.0  # rounding must never let a draw in [0, 1) fall past the last subtree
            subtrees = [levels for _, levels in expansions]
            table[symbol] = (cumulative, subtrees, [tuple(s for s, _ in levels[-1]) for levels in subtrees])
        return base, table

    @cache  # noqa: B019
    def substrings(self) -> dict:
        """For the level-B symbols of bottom(): token tuple -> {symbol: (number of derivations, probability)}."""
        base, _ = self.bottom()
        table = {}
        for symbol in self.levels[base]:
            for probability, levels in _expansions(self, symbol):
                entry = table.setdefault(tuple(s for s, _ in levels[-1]), {})
                count, total = entry.get(symbol, (0, 0.0))
                entry[symbol] = (count + 1, total + probability)
        return table


def _count_subtrees(grammar: Grammar, symbol: int) -> int:
    if symbol not in grammar.rules:
        return 1
    return sum(math.prod(_count_subtrees(grammar, child) for child in rule) for rule in grammar.rules[symbol])


def _expansions(grammar: Grammar, symbol: int) -> list:
    """Every derivation of `symbol` down to the terminals, as (probability, levels): levels[k] lists the (symbol,
    rule length) pairs of the k-th level of the subtree, level 0 being `symbol` itself and the last level the
    terminals (rule length 0). Side-by-side subtrees concatenate level by level, since children are contiguous."""
    if symbol not in grammar.rules:
        return [(1.0, [[(symbol, 0)]])]
    result = []
    for rule in grammar.rules[symbol]:
        for combination in itertools.product(*(_expansions(grammar, child) for child in rule)):
            probability = 1.0 / len(grammar.rules[symbol])
            levels = [[(symbol, len(rule))]]
            for child_probability, child_levels in combination:
                probability *= child_probability
                for k, level in enumerate(child_levels, 1):
                    if k == len(levels):
                        levels.append([])
                    levels[k] += level
            result.append((probability, levels))
    return result


# ---------------------------------------------------------------------------------------------------------------
# Parse trees as rows


def tree_rows(levels) -> list[list[int]]:
    """Parse-tree rows ("seq_tree" rows): per terminal, the symbol at every level from the leaf up to the
    root, each followed by -(2 + its position among the nodes of its level)."""
    depth = len(levels) - 1
    owner = list(range(len(levels[depth])))  # node position at the current level above each leaf
    columns = [(levels[depth], owner)]
    for a in range(depth - 1, -1, -1):
        parent = [p for p, (_, arity) in enumerate(levels[a]) for _ in range(arity)]
        owner = [parent[i] for i in owner]
        columns.append((levels[a], owner))
    return [[v for level, owners in columns for v in (level[owners[p]][0], -2 - owners[p])] for p in range(len(owner))]


def check_tree(grammar: Grammar, rows, string) -> str | None:
    """None when `rows` (seq_tree format) is a parse tree of `string` under `grammar`, else the reason. Independent
    of how the tree was made: it regroups the rows into nodes level by level and checks every node's rule."""
    depth = grammar.depth
    if len(rows) != len(string) or any(len(row) != 2 * depth + 2 for row in rows):
        return f"expected {len(string)} rows of {2 * depth + 2} entries"
    groups_below = keys_below = None
    for column in range(depth + 1):
        a = depth - column
        keys = [(row[2 * column], row[2 * column + 1]) for row in rows]
        groups = [list(g) for _, g in itertools.groupby(range(len(rows)), key=keys.__getitem__)]
        if [keys[g[0]][1] for g in groups] != [-2 - i for i in range(len(groups))]:
            return f"level {a} node counters are not -2, -3, ... in order"
        if any(keys[g[0]][0] not in grammar.levels[a] for g in groups):
            return f"level {a} holds a symbol of another level"
        if a == depth and [keys[g[0]][0] for g in groups] != list(string):
            return "the leaves are not the string"
        if groups_below is not None:
            children = iter(groups_below)
            for g in groups:
                rule, covered = [], g[0]
                while covered <= g[-1]:
                    child = next(children)
                    if child[0] != covered:
                        return f"a level {a + 1} node straddles two level {a} nodes"
                    rule.append(keys_below[child[0]][0])
                    covered = child[-1] + 1
                if covered != g[-1] + 1 or tuple(rule) not in grammar.rules[keys[g[0]][0]]:
                    return f"node {keys[g[0]][0]} at level {a} does not derive its children {rule} by a rule"
        groups_below, keys_below = groups, keys
    return None if len(groups_below) == 1 and keys_below[0][0] == grammar.root else "the top level is not the root"


# ---------------------------------------------------------------------------------------------------------------
# JSON configs (keys depth, sizes, idx, all: the format the paper's grammars are published in)


def _excel_name(number: int) -> str:
    name = ""
    while number:
        number, digit = divmod(number - 1, 26)
        name = chr(ord("A") + digit) + name
    return name


def grammar_from_config(config: dict) -> Grammar:
    """A Grammar from a config dict in the JSON format; one clear error for anything malformed. Only `depth`,
    `sizes`, `idx` and `all` define the grammar; the other keys are kept as metadata."""
    for key in ("depth", "sizes", "idx", "all"):
        if key not in config:
            raise ValueError(
                f"Lano config lacks the key {key!r}; expected a reference-format grammar (depth, sizes, idx, all)"
            )
    depth, sizes, idx, nodes = config["depth"], config["sizes"], config["idx"], config["all"]
    if not isinstance(depth, int) or depth < 1 or not len(sizes) == len(idx) == len(nodes) == depth + 1:
        raise ValueError(f"Lano config depth={depth!r}; expected an int >= 1 with depth+1 entries in sizes/idx/all")
    if sizes[0] != 1 or any(len(idx[a]) != sizes[a] or len(nodes[a]) != sizes[a] for a in range(depth + 1)):
        raise ValueError(f"Lano config sizes={sizes}; expected one root and idx/all levels of exactly these sizes")
    levels = tuple(tuple(level) for level in idx)
    if len({s for level in levels for s in level}) != sum(sizes):
        raise ValueError("Lano config idx repeats a symbol id; expected distinct ids")
    rules = {}
    for a in range(depth + 1):
        for position, node in enumerate(nodes[a]):
            if node.get("id") != levels[a][position]:
                raise ValueError(
                    f"Lano config all[{a}][{position}] has id {node.get('id')}, idx says {levels[a][position]}"
                )
            children = node.get("children")
            if a == depth:
                if children:
                    raise ValueError(f"Lano config: terminal {levels[a][position]} has children; expected null")
                continue
            if not children or any(
                not rule or any(not isinstance(c, int) or not 0 <= c < sizes[a + 1] for c in rule) for rule in children
            ):
                raise ValueError(
                    f"Lano config: symbol {levels[a][position]} has rules {children}; expected a non-empty list of "
                    f"non-empty lists of positions 0..{sizes[a + 1] - 1} in level {a + 1}"
                )
            rules[levels[a][position]] = tuple(tuple(levels[a + 1][c] for c in rule) for rule in children)
    metadata = {k: {"true": True, "false": False}.get(v, v) if isinstance(v, str) else v for k, v in config.items()}
    for key in ("sizes", "idx", "all", "count"):
        metadata.pop(key, None)
    return Grammar(levels, rules, metadata)


def grammar_to_config(grammar: Grammar) -> dict:
    """The JSON-format config dict of a grammar (metadata keys first, then sizes, idx, count, all)."""
    config = dict(grammar.config, depth=grammar.depth)
    config["sizes"] = [len(level) for level in grammar.levels]
    config["idx"] = [list(level) for level in grammar.levels]
    config["count"] = max(max(level) for level in grammar.levels)
    position = [{s: i for i, s in enumerate(level)} for level in grammar.levels]
    config["all"] = [
        [
            {
                "depth": a,
                "id": s,
                "name": _excel_name(s + 26),
                "children": [[position[a + 1][c] for c in rule] for rule in grammar.rules[s]]
                if a < grammar.depth
                else None,
            }
            for s in level
        ]
        for a, level in enumerate(grammar.levels)
    ]
    return config


def config_text(grammar: Grammar) -> str:
    """The exact bytes we write for a config: one compact JSON line (so regeneration can be compared byte for
    byte)."""
    return json.dumps(grammar_to_config(grammar), separators=(",", ":")) + "\n"


def save_grammar(grammar: Grammar, path: str) -> None:
    """Write the config atomically; an existing file is never overwritten."""
    with atomic_output(path) as f:
        f.write(config_text(grammar))


@cache
def _from_file(path: str, modified: int) -> Grammar:
    """The grammar of a JSON file, read once per (path, modification time): sampling asks for it on every sample."""
    with open(path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"Lano grammar file {path} is not valid JSON ({error})") from None
    return grammar_from_config(config)


def load_grammar(source) -> Grammar:
    """A Grammar from a shipped config name ("cfg3f", "gen3f"), a path to a Lano JSON file, or a config
    dict."""
    if isinstance(source, Grammar):
        return source
    if isinstance(source, dict):
        return grammar_from_config(source)
    path = os.path.join(CONFIG_DIR, f"{source}.json") if source in SHIPPED else source
    if not isinstance(source, str) or not os.path.isfile(path):
        raise ValueError(f"Lano grammar {source!r} is neither a shipped config ({', '.join(SHIPPED)}) nor a JSON file")
    path = os.path.realpath(path)
    return _from_file(path, os.stat(path).st_mtime_ns)


# The paper's nine grammars (Part 1; used again as Lano in Part 4.1), shipped byte for byte as published (where
# from: README.md): rules are facts of the paper, and these files are the only way to train on exactly them.
PAPER = {
    # name: sha256 of the shipped file (a test holds the files to these digests)
    "cfg3b": "9b65f447aed2ef8b50f0dcfa1ae5b03a3e055c36aff8ca732cef25ecf67f62c1",
    "cfg3i": "adf76bd595165fafcd12ccd3f91d60b972bfb202aa001997b57fdfd39e06cbef",
    "cfg3h": "e29f099b103523476aa4f54073e38de6f69419bc95d4cd74b8b61f737aa7395c",
    "cfg3g": "09ecca29c87f3c0b692cddff34f3bd6b362df695b97f71528db212ad37a908ce",
    "cfg3f": "37f177af07ac2123bc0726d0ac293c110712082a3f529c246e1155a737b66e8a",
    "cfg3e1": "decc59267af9231a2c00a34c68b5e0eaf252935124cd83ae74c7a66b0d614770",
    "cfg3e2": "cca4d0dc7aa9c665284d8d179e310d55353e0049c635b59c0a1ac155f03bc3c2",
    "cfg3j": "ec602e7e4df36e036856c2ac2a06853b4099637baffe436c17a5e28f6f9bd781",
    "cfg3k": "943d3c28b9d359cb37812a308b1546e703fe61baf1a0388b98e47f831f3782a3",
}

# Our own random grammars with the parameters of the paper's (named gen<X> after the paper's cfg<X>, so that no one
# takes them for the paper's): rule lengths 2-3, no duplicate rules on a level (gen3b: no repeated child in a rule
# either), the paper's level sizes and rules-per-symbol range. Each seed is the first one >= 0 (find_seed) whose
# grammar has the paper grammar's total number of rules and its number of length-3 rules (up to 1% of the rules:
# exact below 100 rules), an expected string length within 5% of the paper grammar's measured mean, every terminal in
# use and at most 5% of the symbols below the root unused (none for the 3-symbols-per-level configs).
GENERATED = {
    # name: (level sizes root first, rules per symbol min, max, disallow_duplicate_sym, rules of length 2 and 3,
    #        the paper grammar's mean string length, seed)
    "gen3b": ([1, 3, 3, 3, 3, 3, 3], 2, 2, True, (11, 21), 274, 4658),
    "gen3i": ([1, 3, 3, 3, 3, 3, 3], 2, 2, False, (15, 17), 310, 219),
    "gen3h": ([1, 3, 3, 3, 3, 3, 3], 2, 3, False, (20, 19), 238, 720),
    "gen3g": ([1, 3, 3, 3, 3, 3, 3], 3, 3, False, (25, 23), 254, 29),
    "gen3f": ([1, 3, 3, 3, 3, 3, 3], 3, 4, False, (26, 28), 250, 237),
    "gen3e1": ([1, 3, 9, 27, 81, 27, 9], 3, 3, False, (234, 210), 198, 574),
    "gen3e2": ([1, 3, 9, 27, 27, 9, 4], 3, 3, False, (114, 114), 247, 13),
    "gen3j": ([1, 3, 3, 3, 3, 3, 3, 3], 3, 3, False, (30, 27), 546, 108),
    "gen3k": ([1, 3, 3, 3, 3, 3, 3, 3], 3, 4, False, (33, 35), 518, 1484),
}
SHIPPED = (*PAPER, *GENERATED)  # every config under lano_configs/, by name
