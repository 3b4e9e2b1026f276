"""The linear models' plain-PyTorch paths, side by side in one process, reported as ratios.

1. Chunked (training / prefill) form against the token-by-token recurrence, forward, at T = 2048 with the recipes'
   head sizes (GLA/GDN dk = 128, dv = 256; Mamba2 P = 256, N = 128), batch 1 and 4: speed-up naive / chunked
   (target >= 10x).
2. Training step (forward + backward + AdamW) of each model with Canon layers ("AbbCD") against the same model
   without them ("bb", the recipes' conv baselines): time ratio Canon / conv (target <= 1.10 on CPU).

Timings are medians over repeats, the two sides interleaved so machine noise hits both alike. On CPU they are the
process's CPU time with one intra-op thread (steady on a shared machine, where wall time also counts other
processes); on CUDA wall time after synchronisation.

Usage:
    .venv/bin/python benchmarks/linear_kernels.py [--device cpu|cuda] [--quick]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from huggingface_linear import (
    GatedDeltaNetCanonConfig,
    GatedDeltaNetCanonForCausalLM,
    GLACanonConfig,
    GLACanonForCausalLM,
    Mamba2CanonConfig,
    Mamba2CanonForCausalLM,
)
from huggingface_linear import linear_recurrences as lr

SEED = 1337


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(fns, repeats, device):
    """Median seconds of each zero-argument function, called in turn `repeats` times after one warm-up call each."""
    clock = time.perf_counter if device == "cuda" else time.process_time
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            sync(device)
            start = clock()
            fn()
            sync(device)
            bucket.append(clock() - start)
    return [statistics.median(t) for t in times]


def recurrence_inputs(B, T, H, device):
    g = torch.Generator().manual_seed(SEED)
    K, V = 128, 256
    randn = lambda *shape: torch.randn(*shape, generator=g).to(device)  # noqa: E731
    q, k, v = randn(B, T, H, K), randn(B, T, H, K), randn(B, T, H, V)
    gk = F.logsigmoid(randn(B, T, H, K)) / 16
    qn, kn = lr.l2_normalize(q), lr.l2_normalize(k)
    gate, beta = F.logsigmoid(randn(B, T, H)), torch.sigmoid(randn(B, T, H))
    x, dt, A = randn(B, T, H, V), F.softplus(randn(B, T, H)), -torch.rand(H, generator=g).to(device) * 8
    Bm, Cm, D = randn(B, T, 1, K), randn(B, T, 1, K), randn(H)
    return {
        "GLA": (lambda: lr.naive_recurrent_gla(q, k, v, gk), lambda: lr.chunk_gla(q, k, v, gk)),
        "gated delta rule": (
            lambda: lr.naive_recurrent_gated_delta_rule(qn, kn, v, gate, beta),
            lambda: lr.chunk_gated_delta_rule(qn, kn, v, gate, beta),
        ),
        "Mamba2 SSD": (lambda: lr.naive_ssd(x, dt, A, Bm, Cm, D), lambda: lr.chunk_ssd(x, dt, A, Bm, Cm, D)),
    }


def bench_recurrences(T, H, batches, repeats, device):
    print(f"\n1. chunked vs token-by-token recurrence, forward, T={T}, heads={H} ({device})")
    print(f"   {'mixer':<18}{'batch':>6}{'naive ms':>10}{'chunked ms':>12}{'speed-up':>10}")
    with torch.no_grad():
        for B in batches:
            for name, (naive, chunked) in recurrence_inputs(B, T, H, device).items():
                t_naive, t_chunk = interleaved_medians([naive, chunked], repeats, device)
                print(f"   {name:<18}{B:>6}{t_naive * 1e3:>10.1f}{t_chunk * 1e3:>12.1f}{t_naive / t_chunk:>9.1f}x")


def model_pair(arch, d, layers, vocab):
    """The same model with canon_set "AbbCD" and "bb" (GLA5/GDN2/Mamba2 recipe settings, scaled down)."""
    heads = d // 128
    pairs = []
    for canon_set in ("AbbCD", "bb"):
        torch.manual_seed(SEED)
        common = dict(hidden_size=d, num_hidden_layers=layers, vocab_size=vocab, canon_set=canon_set)
        if arch == "GLA5":
            config = GLACanonConfig(**common, num_heads=heads, expand_k=1, expand_v=2, output_gate_rank=16,
                                    use_short_conv=True, intermediate_size=2 * d, zeyuan_split_init=True)  # fmt: skip
            pairs.append(GLACanonForCausalLM(config))
        elif arch == "GDN2":
            config = GatedDeltaNetCanonConfig(**common, num_heads=heads, head_dim=128, output_gate_rank=16,
                                              intermediate_size=2 * d, zeyuan_split_init=True)  # fmt: skip
            pairs.append(GatedDeltaNetCanonForCausalLM(config))
        else:
            config = Mamba2CanonConfig(**common, num_heads=2 * d // 256, head_dim=256, state_size=128, n_groups=1,
                                       mlp_type="mlp10", residual_in_fp32=False)  # fmt: skip
            pairs.append(Mamba2CanonForCausalLM(config))
    return pairs


def train_step_fn(model, ids):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_canon_overhead(d, layers, vocab, batch, T, repeats, device):
    print(f"\n2. training step with Canon (AbbCD) vs without (bb): d={d}, layers={layers}, batch={batch}, T={T} "
          f"({device})")  # fmt: skip
    print(f"   {'model':<8}{'Canon ms':>10}{'conv ms':>10}{'ratio':>8}")
    ids = torch.randint(3, vocab, (batch, T), generator=torch.Generator().manual_seed(SEED)).to(device)
    for arch in ("GLA5", "GDN2", "Mamba2"):
        canon, conv = (m.to(device) for m in model_pair(arch, d, layers, vocab))
        t_canon, t_conv = interleaved_medians([train_step_fn(canon, ids), train_step_fn(conv, ids)], repeats, device)
        print(f"   {arch:<8}{t_canon * 1e3:>10.1f}{t_conv * 1e3:>10.1f}{t_canon / t_conv:>8.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke run)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    if args.quick:
        bench_recurrences(T=256, H=1, batches=(1,), repeats=2, device=args.device)
        bench_canon_overhead(d=256, layers=1, vocab=500, batch=1, T=128, repeats=2, device=args.device)
        return
    bench_recurrences(T=2048, H=4, batches=(1, 4), repeats=3, device=args.device)
    bench_canon_overhead(d=512, layers=2, vocab=2000, batch=2, T=1024, repeats=7, device=args.device)


if __name__ == "__main__":
    main()
