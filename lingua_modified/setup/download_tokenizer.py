"""Fetch the tokenizer a recipe names into SAVE_DIR/tokenizer.model (or SAVE_DIR/<name>.tiktoken).

    python setup/download_tokenizer.py NAME SAVE_DIR [--api_key TOKEN]

NAME is one of TOKENIZERS below, downloaded from the Hugging Face Hub (the Llama and Gemma repositories are gated:
accept the licence on the model's page, then pass a token with --api_key or log in with `hf auth login`), or the
name of a tiktoken encoding (e.g. cl100k_base), whose ranks are cached in SAVE_DIR and written as
SAVE_DIR/<name>.tiktoken. The recipes expect `tokenizers/llama2/tokenizer.model` (sp, 1B/3B) and
`tokenizers/llama3/tokenizer.model` (tiktoken, 8B):

    python setup/download_tokenizer.py llama2 tokenizers/llama2 --api_key hf_...
    python setup/download_tokenizer.py llama3 tokenizers/llama3 --api_key hf_...
"""

import argparse
import base64
import os
import shutil
import sys
from pathlib import Path

if __package__:  # imported as setup.download_tokenizer
    from .atomic import atomic_output
else:  # run by path (python setup/download_tokenizer.py), with this folder first on sys.path
    from atomic import atomic_output

TOKENIZERS = {  # name -> (Hub repository, file in it)
    "llama2": ("meta-llama/Llama-2-7b", "tokenizer.model"),
    "llama3": ("meta-llama/Meta-Llama-3-8B", "original/tokenizer.model"),
    "gemma": ("google/gemma-2-9b", "tokenizer.model"),
}


class TokenizerError(ValueError):
    """A tokenizer that cannot be fetched; the message says why and what to do."""


def hf_hub_download(**kwargs) -> str:
    """huggingface_hub.hf_hub_download (imported on use: a tiktoken encoding needs no huggingface_hub)."""
    from huggingface_hub import hf_hub_download as download

    return download(**kwargs)


def load_tiktoken(name: str):
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError:
        raise TokenizerError(
            f"tokenizer {name!r} is neither one of {sorted(TOKENIZERS)} nor a tiktoken encoding; expected one of "
            f"{sorted(TOKENIZERS) + sorted(tiktoken.list_encoding_names())}"
        ) from None


def fetch_hub(name: str, save_dir: Path, token: str | None) -> Path:
    repo_id, filename = TOKENIZERS[name]
    try:
        cached = hf_hub_download(repo_id=repo_id, filename=filename, token=token or None)
    except Exception as error:  # huggingface_hub's HTTP errors, classified by their status
        status = getattr(getattr(error, "response", None), "status_code", None)
        if type(error).__name__ == "GatedRepoError" or status in (401, 403):
            raise TokenizerError(
                f"the Hub refused {repo_id} ({status or type(error).__name__}): the repository is gated. Accept its "
                f"licence at https://huggingface.co/{repo_id}, create a read token at "
                "https://huggingface.co/settings/tokens, and pass it with --api_key TOKEN (or run `hf auth login`)"
            ) from error
        raise
    target = save_dir / "tokenizer.model"
    with open(cached, "rb") as source, atomic_output(target, overwrite=True, binary=True) as f:
        shutil.copyfileobj(source, f)
    return target


def fetch_tiktoken(name: str, save_dir: Path) -> Path:
    """The encoding's ranks, fetched through tiktoken with its cache in save_dir, written in tiktoken's file format
    (one `base64(token) rank` line per token), which the trainer's `tiktoken` tokenizer reads."""
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(save_dir)
    try:
        encoding = load_tiktoken(name)
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous
    ranks = sorted(encoding._mergeable_ranks.items(), key=lambda item: item[1])
    target = save_dir / f"{name}.tiktoken"
    with atomic_output(target, overwrite=True) as f:
        f.writelines(f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in ranks)
    return target


def download_tokenizer(name: str, save_dir: str | Path, api_key: str | None = None) -> Path:
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    if name in TOKENIZERS:
        return fetch_hub(name, save_dir, api_key)
    return fetch_tiktoken(name, save_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python setup/download_tokenizer.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help=f"one of {', '.join(TOKENIZERS)}, or a tiktoken encoding name")
    parser.add_argument("save_dir", help="folder to write the tokenizer into")
    parser.add_argument("--api_key", default="", help="Hugging Face token (gated repositories)")
    args = parser.parse_args(argv)
    try:
        path = download_tokenizer(args.name, args.save_dir, args.api_key)
    except TokenizerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
