"""LlamaCanon-ABCD against transformers' LlamaForCausalLM at equal dimensions, side by side in one process.

Both models share every dimension, the RoPE base and the attention implementation (sdpa); ours has
canon_set="ABCD", no QK-norm and full RoPE, so the Canon layers are the only difference. Three measurements,
each reported as the ratio ours / theirs:

1. training step time (forward + backward, loss from labels=input_ids), median over timed repeats;
2. greedy decode throughput with the KV (and Canon) cache: generated tokens per second of the whole generate()
   call (batch 1, a short prompt whose prefill is included);
3. peak memory of the training step, parameters and gradients included.

Usage:
    .venv/bin/python benchmarks/hf_llamacanon.py [--device cpu|cuda] [--quick]
"""

import argparse
import statistics
import time
import weakref
from dataclasses import dataclass

import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import LlamaConfig, LlamaForCausalLM

from huggingface import LlamaCanonConfig, LlamaCanonForCausalLM

SEED = 1337
ROPE_THETA = 10000.0
MiB = 2**20


@dataclass
class Settings:
    hidden_size: int = 512
    num_layers: int = 8
    num_heads: int = 8
    intermediate_size: int = 1536
    vocab_size: int = 32000
    seq_len: int = 512
    batch_size: int = 4
    warmup: int = 3  # untimed training steps per model
    repeats: int = 9  # timed training steps per model
    prompt_len: int = 32
    new_tokens: int = 128
    decode_repeats: int = 9  # timed generate() calls per model, after one untimed call


def settings_for(device: str, quick: bool) -> Settings:
    if quick:
        return Settings(
            hidden_size=128,
            num_layers=2,
            num_heads=4,
            intermediate_size=384,
            vocab_size=1000,
            seq_len=64,
            batch_size=2,
            warmup=1,
            repeats=3,
            prompt_len=8,
            new_tokens=16,
            decode_repeats=2,
        )
    if device == "cuda":
        return Settings(batch_size=16, warmup=5, repeats=20, new_tokens=256, decode_repeats=5)
    return Settings()


def build_models(s: Settings, device: str, dtype: torch.dtype):
    """(ours, theirs), each initialised from the same seed; only the Canon layers differ."""
    dims = dict(
        vocab_size=s.vocab_size,
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        max_position_embeddings=max(s.seq_len, s.prompt_len + s.new_tokens),
        attn_implementation="sdpa",
    )
    torch.manual_seed(SEED)
    ours = LlamaCanonForCausalLM(
        LlamaCanonConfig(**dims, canon_set="ABCD", qk_norm=False, rope_dim=None, rope_theta=ROPE_THETA)
    )
    torch.manual_seed(SEED)
    theirs = LlamaForCausalLM(LlamaConfig(**dims, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA}))
    return ours.to(device=device, dtype=dtype), theirs.to(device=device, dtype=dtype)


def synchronize(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def train_step(model, tokens):
    model.zero_grad(set_to_none=True)
    model(input_ids=tokens, labels=tokens).loss.backward()


def timed(fn, device: str) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def alternate(models, fn, warmup: int, repeats: int, device: str):
    """Median seconds of fn(model) per model, interleaving the models (and flipping their order every round)
    so that machine noise hits all of them alike."""
    times = [[] for _ in models]
    for i in range(warmup + repeats):
        order = range(len(models)) if i % 2 == 0 else reversed(range(len(models)))
        for j in order:
            elapsed = timed(lambda m=models[j]: fn(m), device)
            if i >= warmup:
                times[j].append(elapsed)
    return [statistics.median(t) for t in times]


def generate(model, prompt, new_tokens: int):
    """Greedy decoding of exactly new_tokens tokens (min_new_tokens keeps EOS from ending it early)."""
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    assert out.shape[1] == prompt.shape[1] + new_tokens, f"generated {out.shape[1] - prompt.shape[1]} tokens"


class PeakMemoryTracker(TorchDispatchMode):
    """Peak bytes of tensor storage allocated while this mode is active (CPU has no allocator statistics).

    Every op output whose storage is not one of the op's inputs' storages is a fresh allocation and is counted once;
    views and in-place results share an input's storage and are not. PyTorch keeps a single Python object per live
    storage (also while only autograd holds it), so a weakref finalizer on that object fires exactly when the memory
    is released and subtracts it again. The peak is taken after every op. Scratch buffers that a kernel allocates
    and frees internally are not seen; both models run the same kernels for everything but the Canon layers. (At the
    default sizes this agrees to the byte with the allocator events of torch.profiler(profile_memory=True), which
    is much slower; ru_maxrss would add the C allocator's caching and fragmentation on top.)
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.tracked = set()

    def _release(self, key, nbytes):
        self.tracked.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key not in inputs and key not in self.tracked:
                self.tracked.add(key)
                self.live += storage.nbytes()
                weakref.finalize(storage, self._release, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def train_peak_bytes(model, tokens, device: str) -> int:
    """Parameter bytes + the peak of everything a training step allocates on top (activations, gradients,
    temporaries). Gradients are set to None first, so they are allocated, and counted, inside the step."""
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        train_step(model, tokens)
        torch.cuda.synchronize()
        return params + torch.cuda.max_memory_allocated() - before
    with PeakMemoryTracker() as tracker:
        train_step(model, tokens)
    return params + tracker.peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats, for a smoke test")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    s = settings_for(device, args.quick)

    ours, theirs = build_models(s, device, dtype)
    models = (ours, theirs)
    n_params = [sum(p.numel() for p in m.parameters()) for m in models]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {device}, dtype {dtype}")
    print(
        f"d={s.hidden_size} layers={s.num_layers} heads={s.num_heads} ffn={s.intermediate_size} vocab={s.vocab_size}"
        f" | train B={s.batch_size} T={s.seq_len}, {s.warmup} warmup + {s.repeats} timed steps"
        f" | decode B=1 prompt={s.prompt_len} new={s.new_tokens}, 1 warmup + {s.decode_repeats} timed"
    )
    print(f"parameters: LlamaCanon {n_params[0]:,}  Llama {n_params[1]:,}  (+{n_params[0] - n_params[1]:,} Canon)")

    gen = torch.Generator().manual_seed(SEED)
    tokens = torch.randint(s.vocab_size, (s.batch_size, s.seq_len), generator=gen).to(device)
    prompt = torch.randint(s.vocab_size, (1, s.prompt_len), generator=gen).to(device)

    for m in models:
        m.train()
    step_s = alternate(models, lambda m: train_step(m, tokens), s.warmup, s.repeats, device)
    peak = [train_peak_bytes(m, tokens, device) for m in models]

    for m in models:
        m.zero_grad(set_to_none=True)
        m.eval()
    gen_s = alternate(models, lambda m: generate(m, prompt, s.new_tokens), 1, s.decode_repeats, device)
    tok_per_s = [s.new_tokens / t for t in gen_s]

    step_target = 1.05 if device == "cuda" else 1.15
    rows = [
        ("train step (ms, median)", [t * 1e3 for t in step_s], "<=", step_target),
        ("greedy decode (tok/s)", tok_per_s, ">=", 0.85),
        ("train peak memory (MiB)", [b / MiB for b in peak], "<=", 1.10),
    ]
    header = f"{'metric':<26}{'LlamaCanon':>12}{'Llama':>12}{'ratio':>8}{'target':>10}  result"
    print()
    print(header)
    print("-" * len(header))
    for name, (ours_value, theirs_value), op, target in rows:
        ratio = ours_value / theirs_value
        ok = ratio <= target if op == "<=" else ratio >= target
        print(
            f"{name:<26}{ours_value:>12.1f}{theirs_value:>12.1f}{ratio:>8.3f}{f'{op} {target:.2f}':>10}  "
            f"{'PASS' if ok else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
