"""Command line: generate synthetic pretraining data, or verify generated files.

python -m data_synthetic_pretrain depo --preset depo1-375 --split train --num 100000 --seed 0 --out data/depo
python -m data_synthetic_pretrain verify depo data/depo/*.jsonl
python -m data_synthetic_pretrain capo --preset bioS-multi5-permute-N100k --num 500000 --out data/capo --shards 8
python -m data_synthetic_pretrain capo-bior --model PATH --out bior.jsonl data/capo-prompts/*.jsonl
python -m data_synthetic_pretrain capo-permute bior.jsonl --copies 5 --out bior-permuted.jsonl
python -m data_synthetic_pretrain lano --preset cfg3f --split train --num 100000 --seed 0 --out data/lano
python -m data_synthetic_pretrain lano-cfg parse cfg3f data/lano/cfg3f_train.chunk.00.jsonl  (also show, nextprob,
    stats, new, configs: see lano_cli.py)
"""

import argparse
import json
import sys

from . import lano_cli
from .capo import write_bior
from .capo_check import Statements
from .capo_permute import ABBREVIATIONS, write_permuted
from .generators import GENERATORS, SPLITS
from .writer import write_dataset


def verify_files(generator: str, files: list[str]) -> tuple[int, int]:
    """(valid, invalid) sample counts; prints the first reasons for invalid samples. For generators whose records
    state facts about shared entities (Capo's people), every record must also agree with all records before it, in
    all the files."""
    spec = GENERATORS[generator]
    across = Statements() if spec.statements else None
    valid = invalid = 0
    for path in files:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                try:
                    if across is None:
                        reason = spec.verify(json.loads(line))
                    else:
                        reason, key, facts = spec.statements(json.loads(line))
                        if reason is None:
                            reason = across.add(key, facts, f"{path}:{number}")
                except (ValueError, KeyError, TypeError) as error:
                    reason = f"unreadable record ({error})"
                if reason is None:
                    valid += 1
                else:
                    invalid += 1
                    if invalid <= 10:
                        print(f"{path}:{number}: {reason}", file=sys.stderr)
    return valid, invalid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_synthetic_pretrain", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, spec in GENERATORS.items():
        gen = commands.add_parser(name, help=f"generate {name} samples")
        presets = getattr(spec.presets, "help", None) or f"one of {', '.join(spec.presets)}"
        gen.add_argument("--preset", required=True, help=presets)
        gen.add_argument("--split", choices=SPLITS, default="train")
        gen.add_argument("--num", type=int, required=True, help="number of samples")
        gen.add_argument("--seed", type=int, default=0)
        gen.add_argument("--out", required=True, help="output folder (a lingua data source)")
        gen.add_argument("--shards", type=int, default=1, help="number of .chunk.NN.jsonl files")
        gen.add_argument("--workers", type=int, default=1, help="worker processes (output does not depend on it)")
    verify = commands.add_parser("verify", help="check every sample of generated files")
    verify.add_argument("generator", choices=sorted(GENERATORS))
    verify.add_argument("files", nargs="+")
    bior = commands.add_parser("capo-bior", help="write Capo bioR biographies with a Hugging Face causal LM")
    bior.add_argument("prompts", nargs="+", help="files written by a capo bioR0-/bioR1- preset")
    bior.add_argument("--model", required=True, help="local model folder or hub id")
    bior.add_argument("--out", required=True, help="output .jsonl file")
    bior.add_argument("--max-new-tokens", type=int, default=320)
    bior.add_argument("--batch-size", type=int, default=8)
    bior.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily")
    bior.add_argument("--seed", type=int, default=0)
    bior.add_argument("--trust-remote-code", action="store_true")
    permute = commands.add_parser(
        "capo-permute", help="permuted copies of Capo biographies (bioR written by capo-bior, or bioS)"
    )
    permute.add_argument("files", nargs="+", help="JSON Lines of Capo biography records")
    permute.add_argument("--out", required=True, help="output .jsonl file (never overwritten)")
    permute.add_argument("--copies", type=int, default=1, help="permuted copies per biography")
    permute.add_argument("--seed", type=int, default=0)
    permute.add_argument("--max-tries", type=int, default=1000, help="shuffles tried until the first sentence can "
                         "name the person in full")  # fmt: skip
    permute.add_argument("--on-failure", choices=("skip", "error"), default="skip",
                         help="leave out texts that cannot be permuted, or stop without writing")  # fmt: skip
    permute.add_argument("--abbreviations", default="", help="more comma-separated abbreviations whose periods do "
                         "not end a sentence (added to the built-in list)")  # fmt: skip
    lano_cli.add_commands(commands)
    args = parser.parse_args(argv)

    try:
        if args.command == "verify":
            valid, invalid = verify_files(args.generator, args.files)
            print(f"valid {valid} invalid {invalid}")
            return 1 if invalid else 0
        if args.command == "lano-cfg":
            return lano_cli.run(args)
        if args.command == "capo-permute":
            extra = tuple(a.strip() for a in args.abbreviations.split(",") if a.strip())
            written, failed = write_permuted(
                args.files, args.out, args.on_failure, copies=args.copies, seed=args.seed, max_tries=args.max_tries,
                abbreviations=ABBREVIATIONS + extra,
            )  # fmt: skip
            print(f"wrote {written} permuted biographies to {args.out}; {failed} could not be permuted")
            return 0
        if args.command == "capo-bior":
            count = write_bior(
                args.prompts, args.model, args.out, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                temperature=args.temperature, seed=args.seed, trust_remote_code=args.trust_remote_code,
            )  # fmt: skip
            print(f"wrote {count} bioR biographies to {args.out}")
            return 0
        paths = write_dataset(
            args.command, args.preset, args.split, args.num, args.seed, args.out, args.shards, args.workers
        )
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {args.num} samples to {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
