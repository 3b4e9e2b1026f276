"""Generate text with a trained model of either app (apps.main's Llama / LlamaCanon, apps.gla's GLA5 / GDN2 /
Mamba2), and score token sequences (the evaluation's two primitives).

    python -m apps.main.generate ckpt=<dump_dir>/checkpoints/<step>/consolidated prompts='[Once upon,The cat]'
    python -m apps.main.generate ckpt=... prompts_file=prompts.txt temperature=0.8 top_p=0.95 max_gen_len=64

Other `key=value` arguments set fields of LeftPaddedGeneratorArgs; without `prompts` or `prompts_file`
(one prompt per line) the prompts are read from stdin until an empty line. A checkpoint folder is made loadable with
`python -m lingua.checkpoint consolidate <dump_dir>/checkpoints/<step>`.

How generation runs: prompts are encoded without BOS/EOS, keep their last `max_prompt_len` tokens, and are sorted by
length and batched with LEFT padding, as many rows per batch as the token budget `max_tokens` allows for (prompt +
max_gen_len) tokens each. One forward fills the generation cache that the model's app declares in its ModelSpec
(Llama: keys, values and Canon conv states, with padding masked out of attention and zeroed before every Canon layer
and RoPE positions starting at each prompt's first token; the linear models: recurrent, short-conv and Canon states
that padding never enters), so a row computes what it would alone; then one token per forward until every row has
produced EOS, a stop string, or max_gen_len tokens. Outputs are in the prompts' order; the text includes a stop string
that ended it (the evaluation cuts it off) but not EOS.
"""

import importlib
import json
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lingua.args import ConfigError, cli_overrides, dataclass_from_dict
from lingua.checkpoint import CONFIG_NAME, CONSOLIDATE_NAME
from lingua.distributed import DTYPES
from lingua.tokenizer import TokenizerArgs, build_tokenizer
from lingua.training import ModelSpec


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LeftPaddedGeneratorArgs:
    temperature: float = 0.0  # 0: greedy (argmax)
    top_p: float | None = None  # nucleus sampling: the most likely tokens holding this much probability
    top_k: int | None = None  # sample among the k most likely tokens
    max_gen_len: int = 512  # new tokens per prompt at most
    max_tokens: int = 1024  # token budget of one batch (rows x their length); also caps prompt + generation
    max_prompt_len: int | None = None  # default: min(model max_seqlen, max_tokens) - max_gen_len
    until: list[str] = field(default_factory=list)  # stop strings
    compile_prefilling: bool = False  # accepted for recipe compatibility; must stay false (not implemented)
    reduce_generation_overhead: bool = False  # idem
    show_progress: bool = False
    dtype: str | None = "bf16"  # fp32 | bf16 | fp16: the model's parameters are cast to it ("pure" low precision)
    device: str = field(default_factory=default_device)


def check_generator_args(cfg: LeftPaddedGeneratorArgs) -> None:
    if cfg.compile_prefilling or cfg.reduce_generation_overhead:
        raise ValueError("generator.compile_prefilling / reduce_generation_overhead are not supported; expected false")
    if (cfg.dtype or "fp32") not in DTYPES:
        raise ValueError(f"generator.dtype={cfg.dtype!r}; expected one of {', '.join(DTYPES)}")
    if cfg.max_gen_len < 1 or cfg.max_tokens < 2:
        raise ValueError(f"generator.max_gen_len={cfg.max_gen_len}, max_tokens={cfg.max_tokens}; expected >= 1, >= 2")
    if cfg.top_p is not None and not 0 < cfg.top_p <= 1:
        raise ValueError(f"generator.top_p={cfg.top_p}; expected a probability in (0, 1] or null")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise ValueError(f"generator.top_k={cfg.top_k}; expected a positive integer or null")


# the apps whose checkpoints generation and evaluation serve, each a module defining its ModelSpec `MODEL`: tried in
# this order and imported only when reached (the linear models need transformers, Llama checkpoints do not)
APP_MODULES = ("apps.main.train", "apps.gla.train")


def app_specs():
    for name in APP_MODULES:
        yield importlib.import_module(name).MODEL


def spec_for_checkpoint(model_params: dict) -> ModelSpec:
    """The app of a checkpoint's `model` section: the first whose model arguments know every key, else the one
    leaving the fewest unknown (a config written by another version of the trainer may carry keys of its own)."""
    best, fewest = None, None
    for spec in app_specs():
        unknown = len(set(model_params) - {f.name for f in fields(spec.model_args)})
        if unknown == 0:
            return spec
        if fewest is None or unknown < fewest:
            best, fewest = spec, unknown
    return best


def spec_for_model(model: nn.Module) -> ModelSpec:
    """The app whose `build` (a model class) made `model`."""
    for spec in app_specs():
        if isinstance(model, spec.build):
            return spec
    raise ValueError(f"{type(model).__name__} is no app's model; expected the LMTransformer of one of {APP_MODULES}")


def load_consolidated_model_and_tokenizer(folder, device="cpu", dtype: str | None = "fp32"):
    """(model in eval mode, tokenizer) from a consolidated folder: consolidated.pth ({"model": state dict}) and
    params.json (the training config: `model` fields and `data.tokenizer`), of any app's model."""
    folder = Path(folder)
    if not (folder / CONSOLIDATE_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        hint = (
            f"; it is a checkpoint folder: run `python -m lingua.checkpoint consolidate {folder}` and pass "
            f"{folder / 'consolidated'}"
            if (folder / ".metadata").exists()
            else ""
        )
        raise FileNotFoundError(
            f"{folder} is not a consolidated checkpoint (expected {CONSOLIDATE_NAME} and {CONFIG_NAME}){hint}"
        )
    params = json.loads((folder / CONFIG_NAME).read_text())
    if "model" not in params:
        raise ValueError(f"{folder / CONFIG_NAME} has no 'model' section; expected a training config")
    spec = spec_for_checkpoint(params["model"])
    model_args = dataclass_from_dict(spec.model_args, params["model"], strict=False)
    tokenizer_args = dataclass_from_dict(TokenizerArgs, (params.get("data") or {}).get("tokenizer") or {}, strict=False)
    with torch.device("meta"):
        model = spec.build(model_args)
    state = torch.load(folder / CONSOLIDATE_NAME, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"], assign=True)
    model = model.to(device=device, dtype=DTYPES[dtype or "fp32"]).eval()
    return model, build_tokenizer(tokenizer_args)


def sample_tokens(logits, temperature=0.0, top_p=None, top_k=None) -> torch.Tensor:
    """Next tokens [B] from logits [B, V]: argmax at temperature 0; else softmax(logits / T), restricted to the top_k
    most likely tokens and then to the nucleus (tokens whose more likely predecessors hold less than top_p)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_k is not None:
        kth = probs.topk(min(top_k, probs.shape[-1]), dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    if top_p is None:
        return torch.multinomial(probs, 1)[:, 0]
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
    return order.gather(-1, torch.multinomial(sorted_probs, 1))[:, 0]


def cut_at_stop(text: str, until: list[str]) -> str:
    """`text` up to the first occurrence of any stop string (which generation ends with)."""
    cut = min((i for i in (text.find(s) for s in until if s) if i >= 0), default=len(text))
    return text[:cut]


class LeftPaddedGenerator:
    """Generates from prompts batched with left padding (so every row's next token sits in the last column) through
    the generation cache of the model's app, and scores token sequences."""

    def __init__(self, cfg: LeftPaddedGeneratorArgs, model: nn.Module, tokenizer):
        check_generator_args(cfg)
        self.cfg = cfg
        self.model = model
        self.new_cache = spec_for_model(model).generation_cache
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_seqlen = model.max_seqlen
        prefix = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
        self.empty_prompt = [] if prefix is None else [prefix]  # what an empty prompt conditions on

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_bos=False, add_eos=False)

    def prompt_limit(self, max_gen_len: int) -> int:
        limit = self.cfg.max_prompt_len or min(self.max_seqlen, self.cfg.max_tokens) - max_gen_len
        if limit < 1:
            raise ValueError(
                f"max_gen_len={max_gen_len} leaves no room for a prompt within max_seqlen={self.max_seqlen} and "
                f"max_tokens={self.cfg.max_tokens}; lower max_gen_len or set max_prompt_len"
            )
        return limit

    def generate(self, prompts: list[str], max_gen_len=None, until=None, **sampling) -> list[str]:
        """Texts generated after each prompt. max_gen_len, until and the sampling settings (temperature, top_p,
        top_k) default to the generator's config."""
        max_gen_len = max_gen_len or self.cfg.max_gen_len
        limit = self.prompt_limit(max_gen_len)
        ids = [(self.encode(p) or self.empty_prompt)[-limit:] for p in prompts]
        tokens = self.generate_tokens(ids, max_gen_len, self.cfg.until if until is None else until, **sampling)
        return [self.tokenizer.decode(t) for t in tokens]

    @torch.inference_mode()
    def generate_tokens(self, prompts: list[list[int]], max_gen_len=None, until=(), **sampling) -> list[list[int]]:
        """New token ids after each prompt (token ids, none empty), without EOS."""
        max_gen_len = max_gen_len or self.cfg.max_gen_len
        sampling = {k: sampling.get(k, getattr(self.cfg, k)) for k in ("temperature", "top_p", "top_k")}
        if any(not p for p in prompts):
            raise ValueError("a prompt has no tokens; expected at least one token to condition on")
        results = [None] * len(prompts)
        for batch in tqdm(self._batches(prompts, max_gen_len), disable=not self.cfg.show_progress, desc="generate"):
            generated = self._generate_batch([prompts[i] for i in batch], max_gen_len, until, sampling)
            for index, tokens in zip(batch, generated, strict=True):
                results[index] = tokens
        return results

    def _batches(self, sequences, extra: int):
        """Indices of the sequences, longest first, in batches of at most max_tokens (length + extra) tokens."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        start = 0
        while start < len(order):
            rows = max(1, self.cfg.max_tokens // (len(sequences[order[start]]) + extra))
            yield order[start : start + rows]
            start += rows

    def _generate_batch(self, prompts, max_gen_len, until, sampling):
        length = max(len(p) for p in prompts)
        tokens = torch.zeros(len(prompts), length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens[row, length - len(prompt) :] = torch.tensor(prompt)
        pad = torch.tensor([length - len(p) for p in prompts], device=self.device)
        cache = self.new_cache(self.model, pad, length + max_gen_len)
        logits = self.model(tokens.to(self.device), cache=cache)[:, -1]
        # a stop string ends within its last len(bytes) tokens (every token is at least one byte); one more token
        # because decoders such as SentencePiece drop the leading space of the first token they decode
        tail = max((len(s.encode("utf-8")) for s in until), default=0) + 1
        generated = [[] for _ in prompts]
        done = [False] * len(prompts)
        for step in range(max_gen_len):
            next_tokens = sample_tokens(logits, **sampling)
            for row, token in enumerate(next_tokens.tolist()):
                if done[row]:
                    continue
                if token == self.tokenizer.eos_id:
                    done[row] = True
                    continue
                generated[row].append(token)
                if until and any(s in self.tokenizer.decode(generated[row][-tail:]) for s in until):
                    done[row] = True
            if all(done) or step == max_gen_len - 1:
                break
            logits = self.model(next_tokens[:, None], cache=cache)[:, -1]
        return generated

    @torch.inference_mode()
    def score(self, sequences: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each sequence s (at least 2 tokens, at most max_seqlen + 1): the log-probabilities of s[1:] given
        their prefixes, and whether each is the argmax. Sequences are right-padded into batches of max_tokens."""
        if any(len(s) < 2 for s in sequences):
            raise ValueError("a sequence to score has fewer than 2 tokens; expected a context and a target")
        results = [None] * len(sequences)
        for batch in tqdm(self._batches(sequences, -1), disable=not self.cfg.show_progress, desc="score"):
            length = len(sequences[batch[0]]) - 1
            inputs = torch.zeros(len(batch), length, dtype=torch.long)
            for row, index in enumerate(batch):
                inputs[row, : len(sequences[index]) - 1] = torch.tensor(sequences[index][:-1])
            logits = self.model(inputs.to(self.device))
            for row, index in enumerate(batch):
                targets = torch.tensor(sequences[index][1:], device=self.device)
                row_logits = logits[row, : len(targets)].float()
                logprobs = -F.cross_entropy(row_logits, targets, reduction="none")
                greedy = row_logits.argmax(-1) == targets
                results[index] = (logprobs.cpu().numpy(), greedy.cpu().numpy())
        return results


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def read_prompts(cli: dict) -> list[str]:
    if "prompts" in cli and "prompts_file" in cli:
        raise ConfigError("give prompts=[...] or prompts_file=..., not both")
    if "prompts" in cli:
        prompts = cli.pop("prompts")
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"prompts={prompts!r}; expected a list of strings, e.g. prompts='[Hello,Once upon]'")
        return prompts
    if "prompts_file" in cli:
        path = cli.pop("prompts_file")
        try:
            return [line for line in Path(path).read_text().splitlines() if line.strip()]
        except OSError as error:
            raise ConfigError(f"cannot read prompts_file {path!r} ({error.strerror})") from None
    print("Enter one prompt per line, then an empty line:", file=sys.stderr)
    prompts = []
    for line in sys.stdin:
        if not line.strip():
            break
        prompts.append(line.rstrip("\n"))
    return prompts


def main(argv=None) -> int:
    try:
        config, cli = cli_overrides(sys.argv[1:] if argv is None else argv)
        if config is not None:
            raise ConfigError("generate takes no config=; pass ckpt=... and generator fields as key=value")
        ckpt = cli.pop("ckpt", None)
        if ckpt is None:
            raise ConfigError("missing ckpt=<dump_dir>/checkpoints/<step>/consolidated")
        prompts = read_prompts(cli)
        cfg = dataclass_from_dict(LeftPaddedGeneratorArgs, cli)
        check_generator_args(cfg)
        model, tokenizer = load_consolidated_model_and_tokenizer(ckpt, cfg.device, cfg.dtype)
        generator = LeftPaddedGenerator(cfg, model, tokenizer)
        start = time.perf_counter()
        generations = generator.generate(prompts)
        elapsed = time.perf_counter() - start
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for prompt, generation in zip(prompts, generations, strict=True):
        print(f"{prompt}{generation}\n" + "-" * 40)
    n_tokens = sum(len(generator.encode(g)) for g in generations)
    print(f"{n_tokens} tokens in {elapsed:.2f} s ({n_tokens / max(elapsed, 1e-9):.1f} tokens/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
