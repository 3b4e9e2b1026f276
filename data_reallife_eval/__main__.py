"""Command line: evaluate a causal LM on multi-hop birth-year retrieval or on BABILong qa1-qa5.

python -m data_reallife_eval multihop --model PATH_OR_ID --out multihop.json
python -m data_reallife_eval babilong --model PATH_OR_ID --data RMT-team/babilong --out babilong.json

--model is a Hugging Face hub id, an HF folder, or a Lingua consolidated checkpoint folder. Greedy decoding in
left-padded batches; the accuracy table (percent) is printed and written, with every sample's output, to --out.
"""

import argparse
import os
import sys

import torch

from . import babilong, multihop
from .background import load_background
from .evaluate import babilong_items, check_out, format_table, multihop_items, run_items, write_json
from .model import load_model, load_tokenizer, resolve_dtype, wants_bos


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"--instruction {path!r} is not a readable file")
    with open(path, encoding="utf-8") as f:
        return f.read()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_reallife_eval", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", required=True, help="hub id, HF folder, or Lingua consolidated folder")
    common.add_argument("--tokenizer", help="tokenizer hub id or folder (default: the model's own)")
    common.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (e.g. LlamaCanon)")
    common.add_argument("--batch-size", type=int, default=8)
    common.add_argument("--num-samples", type=int, help="samples per cell of the table")
    common.add_argument("--max-new-tokens", type=int)
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    common.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, else float32), float32, bfloat16")
    common.add_argument(
        "--bos",
        action=argparse.BooleanOptionalAction,
        help="start prompts with BOS (default: when the tokenizer adds BOS to plain text itself)",
    )
    common.add_argument("--out", required=True, help="results JSON (must not exist)")

    hop = commands.add_parser("multihop", parents=[common], help="1-hop / 2-hop birth-year retrieval")
    hop.add_argument("--hops", default="1,2", help="comma list of 1, 2 (the paper's N=5 and N=3 people per group)")
    hop.add_argument("--tasks", help="comma list of NxK (N people per group, K hops, N <= 60), e.g. 5x1,3x2,4x3; "
                     "replaces --hops")  # fmt: skip
    hop.add_argument("--contexts", default=",".join(multihop.CONTEXTS),
                     help="comma list of context budgets: 0k ... 6k, any <x>k, or a token count")  # fmt: skip
    hop.add_argument("--setting", choices=multihop.SETTINGS, default="ours",
                     help="paper: the published sampling (Random(42) per setting, first person of the last group "
                     "asked, the original spacing); ours: unbiased, per-sample seeds")  # fmt: skip
    hop.add_argument("--instruction", help="text file whose content replaces the 2+-hop instruction paragraph")
    hop.add_argument("--names", help="folder with first_name.txt, middle_name.txt, last_name.txt (default: ours)")
    hop.add_argument("--seed", type=int, default=0, help="per-sample seeds of --setting ours")
    hop.add_argument("--background", help="JSONL file or HF dataset id (default: built-in filler text)")
    hop.add_argument("--background-field", default="text", help="text field of the background records")
    hop.add_argument("--background-config", help="HF dataset config of --background")
    hop.add_argument("--background-split", default="train", help="HF dataset split of --background")

    babi = commands.add_parser("babilong", parents=[common], help="BABILong qa1-qa5, few-shot")
    babi.add_argument("--tasks", default=",".join(babilong.TASKS), help="comma list of qa1..qa5")
    babi.add_argument("--lengths", default=",".join(babilong.DEFAULT_LENGTHS), help="comma list, e.g. 0k,1k,2k,4k")
    babi.add_argument("--data", default=babilong.DEFAULT_DATA, help="HF dataset id or folder <length>/<task>.jsonl")
    babi.add_argument("--prompts", help="JSON or YAML prompt set (per task: instruction, examples, post_prompt) "
                      "instead of ours, e.g. the original wording")  # fmt: skip
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # every check that needs no model comes first, so bad input fails in seconds and writes nothing
        if args.num_samples is not None and args.num_samples < 1:
            raise ValueError(f"--num-samples {args.num_samples}; expected at least 1")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size {args.batch_size}; expected at least 1")
        if args.max_new_tokens is not None and args.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens {args.max_new_tokens}; expected at least 1")
        check_out(args.out)
        torch_dtype = resolve_dtype(args.dtype, args.device)
        config = {k: v for k, v in vars(args).items() if k not in ("command", "out")}
        if args.command == "multihop":
            tasks = multihop.parse_tasks(args.tasks) if args.tasks else multihop.parse_hops(args.hops)
            contexts = multihop.parse_contexts(args.contexts)
            rows, columns = [task.label for task in tasks], contexts
            instruction = read_text(args.instruction) if args.instruction else None
            names = multihop.load_names(args.names)
            sentences = load_background(
                args.background, args.background_field, args.background_config, args.background_split
            )
        else:
            tasks, lengths = _csv(args.tasks), _csv(args.lengths)
            babilong.check_tasks(tasks)
            babilong.check_lengths(lengths)
            prompts = babilong.load_prompts(args.prompts) if args.prompts else None
            missing = [task for task in tasks if prompts is not None and task not in prompts]
            if missing:
                raise ValueError(f"--prompts {args.prompts} has no prompt for {', '.join(missing)}")
            rows, columns = tasks, lengths
            data = {
                (task, length): babilong.load_babilong(task, length, args.data) for task in tasks for length in lengths
            }
        tokenizer = load_tokenizer(args.model, args.tokenizer, args.trust_remote_code)
        add_bos = wants_bos(tokenizer) if args.bos is None else args.bos
        if add_bos and tokenizer.bos_token_id is None:
            raise ValueError("--bos was given but the tokenizer has no BOS token")
        if args.command == "multihop":
            builder = multihop.MultihopBuilder(tokenizer, sentences, args.seed, args.setting, instruction, names)
            items = multihop_items(builder, tasks, contexts, args.num_samples or 100)
            max_new_tokens = args.max_new_tokens or 8
        else:
            items = babilong_items(data, args.num_samples, prompts)
            max_new_tokens = args.max_new_tokens or 20
        model = load_model(args.model, args.trust_remote_code, args.device, torch_dtype)
        results, samples = run_items(
            model, tokenizer, items, max_new_tokens, args.batch_size, add_bos, desc=args.command
        )
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    table = format_table(results, rows, columns)
    config.update(add_bos=add_bos, max_new_tokens=max_new_tokens)
    payload = {"task": args.command, "config": config, "results": results, "table": table, "samples": samples}
    try:
        write_json(args.out, payload)
    except (ValueError, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
