"""Loading the evaluated model and its tokenizer, and batched greedy generation.

Any Hugging Face causal LM works (a hub id or a local folder; `trust_remote_code` for custom models). A Lingua
consolidated folder (`params.json` + `consolidated.pth`, the trainer's checkpoint layout) loads as LlamaCanon
through `huggingface.LlamaCanonForCausalLM.from_pretrained`; its tokenizer comes from `--tokenizer`, from tokenizer
files in the folder, or from `params.json` (`bytes`, or `sp` with a SentencePiece file that exists here).
"""

import json
import os
from functools import cache

import torch
from tqdm import tqdm


class ByteTokenizer:
    """Lingua's `bytes` tokenizer: UTF-8 bytes 0..255, BOS 256, EOS 257."""

    bos_token_id, eos_token_id, pad_token_id = 256, 257, 257

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([self.bos_token_id] if add_special_tokens else []) + list(text.encode("utf-8"))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """Lingua's `sp` tokenizer: a SentencePiece model file, BOS prepended by default (as in Lingua's training)."""

    def __init__(self, path: str):
        import sentencepiece

        self.model = sentencepiece.SentencePieceProcessor(model_file=path)
        self.bos_token_id, self.eos_token_id = self.model.bos_id(), self.model.eos_id()
        self.pad_token_id = self.eos_token_id

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([self.bos_token_id] if add_special_tokens else []) + self.model.encode(text)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.model.decode([i for i in ids if i not in (self.bos_token_id, self.eos_token_id)])


def _lingua_folder(path: str) -> str | None:
    """The folder holding params.json (+ consolidated.pth): the path itself, or its `consolidated/` (a Lingua
    checkpoint step) or `default/` (the released hub layout) subfolder."""
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "config.json")):
        return None
    for folder in (path, os.path.join(path, "consolidated"), os.path.join(path, "default")):
        if os.path.isfile(os.path.join(folder, "params.json")):
            return folder
    return None


@cache
def register_llamacanon() -> None:
    """Make the Auto classes know LlamaCanon from the installed `huggingface` package, so our folders load without
    --trust-remote-code (and transformers never stops to ask whether to run the folder's code)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from huggingface import LlamaCanonConfig, LlamaCanonForCausalLM

    AutoConfig.register(LlamaCanonConfig.model_type, LlamaCanonConfig, exist_ok=True)
    AutoModelForCausalLM.register(LlamaCanonConfig, LlamaCanonForCausalLM, exist_ok=True)


def check_model_path(model: str) -> None:
    """Fail early, with one sentence, for a local-looking path that does not exist."""
    looks_local = model.startswith((".", "/")) or model.count("/") > 1  # hub ids are "name" or "owner/name"
    if looks_local and not os.path.exists(model):
        raise ValueError(f"model path {model!r} does not exist; expected a local folder or a Hugging Face hub id")


def load_tokenizer(model: str, tokenizer: str | None = None, trust_remote_code: bool = False):
    """The tokenizer: `tokenizer` if given, else the model's own (HF files, or Lingua's params.json)."""
    from transformers import AutoTokenizer

    check_model_path(model)
    register_llamacanon()
    source = tokenizer or model
    lingua = None if tokenizer else _lingua_folder(model)
    if lingua is not None and not any(
        os.path.isfile(os.path.join(model, name)) for name in ("tokenizer.json", "tokenizer_config.json")
    ):
        with open(os.path.join(lingua, "params.json")) as f:
            spec = ((json.load(f).get("data") or {}).get("tokenizer")) or {}
        name, path = spec.get("name"), spec.get("path")
        if name == "bytes":
            return ByteTokenizer()
        if name == "sp" and path and os.path.isfile(path):
            return SentencePieceTokenizer(path)
        raise ValueError(
            f"cannot build the tokenizer of Lingua folder {model!r} (params.json: name={name!r}, path={path!r}); "
            f"pass --tokenizer HF_ID_OR_FOLDER"
        )
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as error:  # unknown id, offline hub, missing files: one sentence with the cause
        raise ValueError(f"cannot load a tokenizer from {source!r} ({type(error).__name__}: {error})") from None


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype for --dtype ("auto" is bfloat16 on CUDA and float32 elsewhere); also checks the device."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, float32, bfloat16 or float16")
    return getattr(torch, dtype)


def load_model(model: str, trust_remote_code: bool = False, device: str = "cpu", torch_dtype=torch.float32):
    """The model in eval mode on `device`."""
    from transformers import AutoModelForCausalLM

    check_model_path(model)
    register_llamacanon()
    try:
        if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "config.json")):
            from huggingface import LlamaCanonForCausalLM

            loaded = LlamaCanonForCausalLM.from_pretrained(_lingua_folder(model) or model, dtype=torch_dtype)
        else:
            loaded = AutoModelForCausalLM.from_pretrained(model, trust_remote_code=trust_remote_code, dtype=torch_dtype)
    except Exception as error:  # a broken folder, an unknown id, remote code not trusted: one sentence
        raise ValueError(f"cannot load model {model!r} ({type(error).__name__}: {error})") from None
    return loaded.to(device).eval()


def wants_bos(tokenizer) -> bool:
    """Whether prompts should start with BOS: exactly when the tokenizer adds it to plain text by itself (Llama's
    and Lingua's do, GPT-2's does not), which is also what lm-eval's HF model does."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer.encode("a", add_special_tokens=True)
    return bos is not None and len(ids) > 0 and ids[0] == bos


def encode_prompt(tokenizer, text: str, add_bos: bool) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [tokenizer.bos_token_id, *ids] if add_bos else ids


@torch.no_grad()
def greedy_generate(model, prompts: list[list[int]], max_new_tokens: int, batch_size: int, pad_id: int, desc=""):
    """Greedy continuations (new token ids, generation stops at EOS) of token-id prompts, in input order.

    Prompts are sorted by length so each left-padded batch wastes little; the longest batch runs first, so a batch
    size too large for the device fails at once.
    """
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}; expected at least 1")
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[list[int]] = [[] for _ in prompts]
    eos = model.generation_config.eos_token_id
    stops = {eos} if isinstance(eos, int) else set(eos or [])
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt")
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad_id,
        )
        for row, i in enumerate(chunk):
            new = generated[row, width:].tolist()
            cut = next((j for j, token in enumerate(new) if token in stops), len(new))
            outputs[i] = new[:cut]
        bar.update(len(chunk))
    bar.close()
    return outputs
