"""Command line: generate synthetic pretraining data, or verify generated files.

python -m data_synthetic_pretrain depo --preset depo1-375 --split train --num 100000 --seed 0 --out data/depo
python -m data_synthetic_pretrain verify depo data/depo/*.jsonl
"""

import argparse
import json
import sys

from .generators import GENERATORS, SPLITS
from .writer import write_dataset


def verify_files(generator: str, files: list[str]) -> tuple[int, int]:
    """(valid, invalid) sample counts; prints the first reasons for invalid samples."""
    check = GENERATORS[generator].verify
    valid = invalid = 0
    for path in files:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                try:
                    reason = check(json.loads(line))
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
        gen.add_argument("--preset", required=True, help=f"one of {', '.join(spec.presets)}")
        gen.add_argument("--split", choices=SPLITS, default="train")
        gen.add_argument("--num", type=int, required=True, help="number of samples")
        gen.add_argument("--seed", type=int, default=0)
        gen.add_argument("--out", required=True, help="output folder (a lingua data source)")
        gen.add_argument("--shards", type=int, default=1, help="number of .chunk.NN.jsonl files")
        gen.add_argument("--workers", type=int, default=1, help="worker processes (output does not depend on it)")
    verify = commands.add_parser("verify", help="check every sample of generated files")
    verify.add_argument("generator", choices=sorted(GENERATORS))
    verify.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    try:
        if args.command == "verify":
            valid, invalid = verify_files(args.generator, args.files)
            print(f"valid {valid} invalid {invalid}")
            return 1 if invalid else 0
        paths = write_dataset(
            args.command, args.preset, args.split, args.num, args.seed, args.out, args.shards, args.workers
        )
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {args.num} samples to {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
