"""Building new Lano grammars from a seed, and the recipe that picked the seeds of the shipped gen* configs."""

import math
import random

from .lano_grammar import GENERATED, RESERVED, Grammar


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
    """A random layered grammar, drawn with its own random.Random(seed).

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
