"""The `lano-cfg` commands: look at a grammar, run the dynamic programs on strings, build new grammars, regenerate
the shipped configs.

python -m data_synthetic_pretrain lano-cfg show cfg3f
python -m data_synthetic_pretrain lano-cfg parse cfg3f data/lano/cfg3f_train.chunk.00.jsonl
python -m data_synthetic_pretrain lano-cfg nextprob cfg3f --tokens "3 1 2 ..."
python -m data_synthetic_pretrain lano-cfg stats cfg3f --tokens "3 1 2 ..."
python -m data_synthetic_pretrain lano-cfg new --seed 0 --depth 5 --num-sym 3 --num-sym-mode 2 --out my_cfg.json
python -m data_synthetic_pretrain lano-cfg configs --check     # our generated gen3* configs
"""

import json
import os
import sys

from tqdm import tqdm

from .atomic import atomic_output
from .common import BOS
from .lano_builder import build_grammar, build_shipped
from .lano_dp import min_substitutions, next_token_probs, parse
from .lano_grammar import CONFIG_DIR, GENERATED, SHIPPED, config_text, load_grammar, save_grammar


def add_commands(commands) -> None:
    lano = commands.add_parser("lano-cfg", help="Lano grammars: show, parse, nextprob, stats, new, configs")
    sub = lano.add_subparsers(dest="lano_command", required=True)
    show = sub.add_parser("show", help="print a grammar's parameters and rules")
    show.add_argument("cfg", help=f"a shipped config ({', '.join(SHIPPED)}) or a reference-format JSON file")
    for name, help_text in [
        ("parse", "membership, number of parses and (--tree) one parse tree of each string"),
        ("nextprob", "the exact next-token table [P(eos), P(t)...] of each string (a valid prefix)"),
        ("stats", "fewest token substitutions to a valid string, with per-level change counts"),
    ]:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("cfg", help="a shipped config name or a reference-format JSON file")
        command.add_argument("files", nargs="*", help="JSONL files with a 'tokens' list per line (BOS/eos dropped)")
        command.add_argument("--tokens", help="one string as space-separated terminal ids, instead of files")
        command.add_argument("--out", help="write JSON lines here (default: stdout)")
        if name == "parse":
            command.add_argument("--tree", action="store_true", help="include one parse tree (seq_tree rows)")
            command.add_argument("--no-count", action="store_true", help="skip counting the parses")
    new = sub.add_parser("new", help="build a random layered grammar and write its JSON config")
    new.add_argument("--seed", type=int, required=True)
    new.add_argument("--depth", type=int, default=7)
    new.add_argument("--num-sym", type=int, default=30, help="number of terminals")
    new.add_argument("--deg-min", type=int, default=2, help="fewest rules per symbol")
    new.add_argument("--deg-max", type=int, default=3, help="most rules per symbol")
    new.add_argument("--len-min", type=int, default=1, help="shortest rule")
    new.add_argument("--len-max", type=int, default=2, help="longest rule")
    new.add_argument("--num-sym-mode", default="1", help="1 or 3 (level i has num_sym*i//depth symbols), 2 "
                     "(num_sym on every level) or a comma-separated list of level sizes, root first")  # fmt: skip
    new.add_argument("--no-dup-sym", action="store_true", help="no child twice in a rule")
    new.add_argument("--no-dup-seq", action="store_true", help="no two equal rules on a level")
    new.add_argument("--add-len-one", action="store_true", help="one unit rule on the first symbol of each level")
    new.add_argument("--out", required=True, help="the .json file to write (never overwritten)")
    configs = sub.add_parser("configs", help="rebuild our generated configs (gen3b ... gen3k) from their seeds")
    action = configs.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="compare with the shipped files byte for byte")
    action.add_argument("--out", help="write the configs into this folder")


def run(args) -> int:
    if args.lano_command == "show":
        return _show(load_grammar(args.cfg))
    if args.lano_command == "new":
        return _new(args)
    if args.lano_command == "configs":
        return _configs(args)
    grammar = load_grammar(args.cfg)
    strings = _read_strings(grammar, args)
    if args.out is None:
        for index, string in enumerate(strings):
            print(json.dumps(_result(grammar, string, args) | {"index": index}, separators=(",", ":")))
        return 0
    with atomic_output(args.out) as out:
        for index, string in enumerate(tqdm(strings, desc=f"lano-cfg {args.lano_command}")):
            out.write(json.dumps(_result(grammar, string, args) | {"index": index}, separators=(",", ":")) + "\n")
    print(f"wrote {len(strings)} results to {args.out}", file=sys.stderr)
    return 0


def _result(grammar, string, args) -> dict:
    if args.lano_command == "parse":
        result = parse(grammar, string, count=not args.no_count)
        return {"member": result.member, "parses": result.parses} | ({"tree": result.tree} if args.tree else {})
    if args.lano_command == "nextprob":
        probs, chosen = next_token_probs(grammar, string)
        return {"probs": probs.tolist(), "chosen": chosen.tolist()}
    result = min_substitutions(grammar, string)
    return {"best": result.best, "changed": result.changed, "string": result.string}


def _read_strings(grammar, args) -> list[list[int]]:
    """The strings to process: --tokens, or the 'tokens' of every JSONL line with a leading BOS and trailing eos
    removed (the records the lano generator writes)."""
    if bool(args.tokens) == bool(args.files):
        raise ValueError("give either --tokens or JSONL files, not both or neither")
    if args.tokens:
        try:
            return [[int(t) for t in args.tokens.split()]]
        except ValueError:
            raise ValueError(f"--tokens {args.tokens!r}; expected space-separated integers") from None
    strings = []
    for path in args.files:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                try:
                    tokens = json.loads(line)["tokens"]
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{path}:{number} is not a JSON object with a 'tokens' list") from None
                if tokens[:1] == [BOS] and tokens[-1:] == [grammar.eos]:
                    tokens = tokens[1:-1]
                strings.append(tokens)
    return strings


def _show(grammar) -> int:
    parameters = {k: v for k, v in grammar.config.items() if k != "ptb"}
    print(json.dumps(parameters | {"sizes": [len(level) for level in grammar.levels]}))
    for a, level in enumerate(grammar.levels[:-1]):
        for symbol in level:
            rules = " | ".join(" ".join(map(str, rule)) for rule in grammar.rules[symbol])
            print(f"{'  ' * a}{symbol} -> {rules}")
    print(f"terminals: {' '.join(map(str, grammar.terminals))}; eos {grammar.eos}")
    return 0


def _new(args) -> int:
    mode = args.num_sym_mode
    try:
        mode = [int(x) for x in mode.split(",")] if "," in mode else int(mode)
    except ValueError:
        raise ValueError(f"--num-sym-mode {args.num_sym_mode!r}; expected 1, 2, 3 or sizes like 1,3,9,9") from None
    grammar = build_grammar(
        args.seed, args.depth, args.num_sym, args.deg_min, args.deg_max, args.len_min, args.len_max, mode,
        args.no_dup_sym, args.no_dup_seq, args.add_len_one,
    )  # fmt: skip
    save_grammar(grammar, args.out)
    print(f"wrote {args.out}: sizes {[len(level) for level in grammar.levels]}, {len(grammar.rules)} non-terminals")
    return 0


def _configs(args) -> int:
    if args.check:
        stale = []
        for name in GENERATED:
            with open(os.path.join(CONFIG_DIR, f"{name}.json")) as f:
                if f.read() != config_text(build_shipped(name)):
                    stale.append(name)
        print(f"differ: {', '.join(stale)}" if stale else f"all {len(GENERATED)} configs regenerate byte for byte")
        return 1 if stale else 0
    existing = [name for name in GENERATED if os.path.exists(os.path.join(args.out, f"{name}.json"))]
    if existing:
        raise FileExistsError(f"{os.path.join(args.out, existing[0])}.json already exists; choose another --out")
    os.makedirs(args.out, exist_ok=True)
    for name in GENERATED:
        save_grammar(build_shipped(name), os.path.join(args.out, f"{name}.json"))
    print(f"wrote {len(GENERATED)} configs to {args.out}")
    return 0
