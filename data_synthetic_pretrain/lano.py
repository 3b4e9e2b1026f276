"""Lano: hierarchical structure. Strings sampled from deep, ambiguous, layered context-free grammars (Physics of
LM Part 1, and Lano in Part 4.1): the model must learn to produce strings the grammar derives; a CYK parser
(lano_dp.py) checks them.

Grammar model: levels 0..D; level 0 is the root, level D the terminals, and every rule of a level-a symbol is a
sequence of level-(a+1) symbols, so every parse tree has exactly D levels of expansion. Ids: terminals 1..|T|, then
eos/mask/sep = |T|+1..|T|+3, then the non-terminals level by level from D-1 up to the root (the largest id). The
JSON config format is the original code's, so its configs (the paper's grammars) load unchanged.

Record layout (our choice; the reference generator adds nothing): [BOS 9999] + string + [eos = |T|+1]; labels 0 on
BOS and 1 on every string token and on eos, so the model also learns where strings end. The eos id is the
grammar's own, which is the first column of the next-token tables of lano_dp.next_token_probs. Presets
`<cfg>-tree` also put the parse tree (the reference's "seq_tree" rows) under meta["tree"].
"""

import bisect
import itertools
import json
import math
import os
import random
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from .common import BOS

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
# JSON configs (the reference format)


def _excel_name(number: int) -> str:
    name = ""
    while number:
        number, digit = divmod(number - 1, 26)
        name = chr(ord("A") + digit) + name
    return name


def grammar_from_config(config: dict) -> Grammar:
    """A Grammar from a reference-format config dict; one clear error for anything malformed. Only `depth`,
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
    """The reference-format config dict of a grammar (metadata keys first, then sizes, idx, count, all)."""
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


@contextmanager
def atomic_output(path: str):
    """A text file written under a temporary name next to `path` and renamed to `path` only when the block
    succeeds; an existing `path` is never overwritten."""
    if os.path.exists(path):
        raise FileExistsError(f"{path} already exists; choose another path or remove it")
    folder = os.path.dirname(os.path.abspath(path))
    temp = tempfile.NamedTemporaryFile("w", dir=folder, prefix=".partial-", delete=False)
    try:
        with temp:
            yield temp
        os.chmod(temp.name, 0o644)  # shared data, not a private temporary file
        os.replace(temp.name, path)
    except BaseException:
        if os.path.exists(temp.name):
            os.remove(temp.name)
        raise


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
    """A Grammar from a shipped config name ("cfg3f", "gen3f"), a path to a reference-format JSON file, or a config
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


# ---------------------------------------------------------------------------------------------------------------
# Building new grammars, seeded by an argument


def level_sizes(depth: int, num_sym: int, num_sym_mode) -> list[int]:
    """Level sizes root first: mode 2 puts num_sym symbols on every level below the root; modes 1 and 3 grow them
    as num_sym*i // depth; a list is used as given."""
    if isinstance(num_sym_mode, (list, tuple)):
        sizes = list(num_sym_mode)
        if len(sizes) != depth + 1 or sizes[0] != 1 or sizes[-1] != num_sym:
            raise ValueError(
                f"level sizes {sizes}; expected depth+1 = {depth + 1} sizes starting with 1 and ending with "
                f"num_sym = {num_sym}"
            )
    elif num_sym_mode == 2:
        sizes = [1] + [num_sym] * depth
    elif num_sym_mode in (1, 3):
        sizes = [1] + [num_sym * i // depth for i in range(1, depth + 1)]
    else:
        raise ValueError(f"num_sym_mode {num_sym_mode!r}; expected 1, 2, 3 or a list of level sizes")
    empty = [i for i, size in enumerate(sizes) if size < 1]
    if empty:
        raise ValueError(
            f"level {empty[0]} would have no symbols (sizes {sizes} from num_sym={num_sym}, depth={depth}, "
            f"num_sym_mode={num_sym_mode}); use num_sym_mode 2, a larger num_sym or an explicit size list"
        )
    return sizes


def build_grammar(
    seed: int,
    depth: int = 7,
    num_sym: int = 30,
    deg_min: int = 2,
    deg_max: int = 3,
    len_min: int = 1,
    len_max: int = 2,
    num_sym_mode=1,
    disallow_duplicate_sym: bool = False,
    disallow_duplicate_seq: bool = False,
    add_len_one: bool = False,
) -> Grammar:
    """A random layered grammar (the original builder's procedure, with its own random.Random(seed)).

    From level D-1 up to the root, every symbol gets U{deg_min..deg_max} rules; a rule has U{len_min..len_max}
    children drawn uniformly from the next level (no child twice in a rule if disallow_duplicate_sym; a rule equal
    to one already on this level is redrawn whole if disallow_duplicate_seq). add_len_one: the first rule of the
    first symbol of every level 1..D-1 is the unit rule to the first symbol below it.
    """
    if depth < 1 or num_sym < 1:
        raise ValueError(f"depth={depth}, num_sym={num_sym}; expected both >= 1")
    if not 1 <= deg_min <= deg_max or not 1 <= len_min <= len_max:
        raise ValueError(
            f"rules per symbol {deg_min}..{deg_max}, rule lengths {len_min}..{len_max}; expected 1 <= min <= max"
        )
    sizes = level_sizes(depth, num_sym, num_sym_mode)
    for a in range(depth):
        below = sizes[a + 1]
        if disallow_duplicate_sym and len_max > below:
            raise ValueError(
                f"rules of {len_max} distinct children cannot be drawn from the {below} symbols of level {a + 1}"
            )
        distinct = sum(
            math.prod(range(below - n + 1, below + 1)) if disallow_duplicate_sym else below**n
            for n in range(len_min, len_max + 1)
        )
        if disallow_duplicate_seq and distinct < sizes[a] * deg_max:
            raise ValueError(
                f"level {a} may need {sizes[a] * deg_max} distinct rules but only {distinct} exist over the "
                f"{below} symbols of level {a + 1}; lower deg_max or allow duplicate rules"
            )
    ids, next_id = [None] * (depth + 1), num_sym + RESERVED + 1
    ids[depth] = list(range(1, num_sym + 1))
    for a in range(depth - 1, -1, -1):
        ids[a] = list(range(next_id, next_id + sizes[a]))
        next_id += sizes[a]
    rng = random.Random(seed)
    rules = {}
    for a in range(depth - 1, -1, -1):
        below, seen = sizes[a + 1], set()
        for position, symbol in enumerate(ids[a]):
            symbol_rules = []
            for r in range(rng.randint(deg_min, deg_max)):
                if add_len_one and 0 < a and position == 0 and r == 0:
                    rule = (0,)
                else:
                    while True:
                        rule = []
                        for _ in range(rng.randint(len_min, len_max)):
                            child = rng.randrange(below)
                            while disallow_duplicate_sym and child in rule:
                                child = rng.randrange(below)
                            rule.append(child)
                        rule = tuple(rule)
                        if not (disallow_duplicate_seq and rule in seen):
                            break
                seen.add(rule)
                symbol_rules.append(tuple(ids[a + 1][c] for c in rule))
            rules[symbol] = tuple(symbol_rules)
    config = dict(
        depth=depth,
        num_sym=num_sym,
        vocab_size=num_sym,
        deg_min=deg_min,
        deg_max=deg_max,
        len_min=len_min,
        len_max=len_max,
        num_sym_mode=list(num_sym_mode) if isinstance(num_sym_mode, (list, tuple)) else num_sym_mode,
        disallow_duplicate_sym=disallow_duplicate_sym,
        disallow_duplicate_seq=disallow_duplicate_seq,
        add_len_one=add_len_one,
        eos_token=num_sym + 1,
        mask_token=num_sym + 2,
        sep_token=num_sym + 3,
        ptb=None,
        seed=seed,
    )
    return Grammar(tuple(tuple(level) for level in ids), rules, config)


# The paper's nine grammars (Part 1; used again as Lano in Part 4.1), shipped byte for byte as published with the
# original PhysicsLM4 code: rules are facts of the paper, and these files are the only way to train on exactly them.
PAPER_SOURCE = (
    "github.com/facebookresearch/PhysicsLM4, data-synthetic-pretrain/Lano-cfg/configs/<name>.json at commit "
    "75806965208c55e9f7f2e2363d3793d2da75d2e4"
)
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


def build_shipped(name: str, seed: int | None = None) -> Grammar:
    """The generated config `name` (a key of GENERATED), rebuilt from its documented seed or from `seed`."""
    sizes, deg_min, deg_max, no_dup_sym, _, _, documented = GENERATED[name]
    uniform = len(set(sizes[1:])) == 1
    return build_grammar(
        documented if seed is None else seed,
        depth=len(sizes) - 1,
        num_sym=sizes[-1],
        deg_min=deg_min,
        deg_max=deg_max,
        len_min=2,
        len_max=3,
        num_sym_mode=2 if uniform else sizes,
        disallow_duplicate_sym=no_dup_sym,
        disallow_duplicate_seq=True,
    )


def expected_length(grammar: Grammar) -> float:
    """The mean length of the strings of `grammar` under uniform rule choices (level by level, bottom up)."""
    mean = dict.fromkeys(grammar.terminals, 1.0)
    for level in reversed(grammar.levels[:-1]):
        for s in level:
            mean[s] = sum(mean[c] for rule in grammar.rules[s] for c in rule) / len(grammar.rules[s])
    return mean[grammar.root]


def meets_recipe(name: str, grammar: Grammar) -> bool:
    """The seed criterion of the generated configs (see GENERATED)."""
    _, _, _, _, mix, mean_length, _ = GENERATED[name]
    lengths = [len(rule) for rules in grammar.rules.values() for rule in rules]
    if len(lengths) != sum(mix) or abs(lengths.count(3) - mix[1]) > len(lengths) // 100:
        return False
    if abs(expected_length(grammar) / mean_length - 1) > 0.05:
        return False
    used = {c for rules in grammar.rules.values() for rule in rules for c in rule}
    below_root = [s for level in grammar.levels[1:] for s in level]
    unused = [s for s in below_root if s not in used]
    return len(unused) <= len(below_root) // 20 and not set(unused) & set(grammar.terminals)


def find_seed(name: str, limit: int = 100_000) -> int:
    for seed in range(limit):
        if meets_recipe(name, build_shipped(name, seed)):
            return seed
    raise ValueError(f"no seed below {limit} meets the {name} recipe")


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


def tree_rows(levels) -> list[list[int]]:
    """The reference's "seq_tree" rows: per terminal, the symbol at every level from the leaf up to the
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
# The registered generator


@dataclass(frozen=True)
class LanoParams:
    cfg: str  # a shipped config name, or the path of a reference-format JSON file
    tree: bool = False  # also store the parse tree under meta["tree"]

    def check(self):
        load_grammar(self.cfg)


class LanoPresets(Mapping):
    """Preset names: a shipped config name (the paper's cfg3b ... cfg3k, or our generated gen3b ... gen3k) or the
    path of a reference-format JSON grammar, optionally followed by "-tree" to store the parse tree. Iterating lists
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
    from .lano_dp import is_member

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
