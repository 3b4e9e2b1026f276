"""Convert a Lingua LlamaCanon checkpoint into a standard Hugging Face folder with the rotate-half RoPE layout.

    python -m huggingface.convert_lingua_to_hf SRC DST [--variant default] [--dtype bfloat16]

SRC is a Lingua folder (`<variant>/params.json` + `consolidated.pth`, or a consolidated folder itself). The q/k rows
(and q_norm/k_norm weights and Canon-B's q/k channels) are permuted per head, so the result runs with
`rope_version="huggingface"` and gives the same logits as the Lingua model. DST gets safetensors weights, config.json
and the three remote-code files; it is written to a temporary folder first and renamed, and an existing non-empty DST
is never overwritten.
"""

import argparse
import os
import shutil
import tempfile

import torch

from .atomic import publish_folder
from .lingua_checkpoint import find_lingua_folder
from .modeling_llama_canon import LlamaCanonForCausalLM


def convert_lingua_to_hf(src, dst, variant=None, dtype=None):
    """Write the converted model to `dst` and return it."""
    dst = os.path.abspath(dst)
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise FileExistsError(f"destination {dst} already exists and is not an empty folder; choose a new path")
    if find_lingua_folder(src, variant) is None:
        raise FileNotFoundError(f"{src} is not a Lingua folder ({variant or 'default'}/params.json + consolidated.pth)")
    model = LlamaCanonForCausalLM.from_pretrained(src, variant=variant, rope_version="huggingface", dtype=dtype)
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    try:
        model.save_pretrained(staging)
        publish_folder(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="Lingua checkpoint folder")
    parser.add_argument("dst", help="new Hugging Face folder")
    parser.add_argument("--variant", default=None, help="sub-folder of SRC holding params.json (default: 'default')")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="saved weight dtype")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = convert_lingua_to_hf(args.src, args.dst, variant=args.variant, dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.dst} ({params:,} parameters, rope_version=huggingface)")


if __name__ == "__main__":
    main()
