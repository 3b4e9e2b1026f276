"""Our recurrences against flash-linear-attention's own plain-PyTorch reference ops (an independent oracle; fla
imports on CPU, its naive ops compute in float32). Skipped when flash-linear-attention is not installed."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from huggingface_linear import linear_recurrences as lr

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "Triton is not supported on current platform, roll back to CPU"
    fla_gla = pytest.importorskip("fla.ops.gla.naive")
    fla_gdn = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    fla_simple_gla = pytest.importorskip("fla.ops.simple_gla.naive")

B, T, H, K, V = 2, 29, 3, 8, 6


def close(ours, theirs):
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=1e-4, atol=1e-4)


def test_gla_matches_fla_naive_recurrent_gla():
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    gk = F.logsigmoid(torch.randn(B, T, H, K)) / 4
    h0 = torch.randn(B, H, K, V)
    ref, ref_state = fla_gla.naive_recurrent_gla(q, k, v, gk, initial_state=h0, output_final_state=True)
    out, state = lr.chunk_gla(q, k, v, gk, initial_state=h0, output_final_state=True, chunk_size=16, sub_chunk=4)
    close(out, ref)
    close(state, ref_state)


def test_gated_delta_rule_matches_fla_naive_recurrent():
    q, k, v = (
        lr.l2_normalize(torch.randn(B, T, H, K)),
        lr.l2_normalize(torch.randn(B, T, H, K)),
        torch.randn(B, T, H, V),
    )
    g, beta = F.logsigmoid(torch.randn(B, T, H)), torch.rand(B, T, H)
    h0 = torch.randn(B, H, K, V)
    ref, ref_state = fla_gdn.naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=h0,
                                                              output_final_state=True)  # fmt: skip
    out, state = lr.chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=8)
    close(out, ref)
    close(state, ref_state)


def test_ssd_matches_fla_simple_gla():
    """Mamba2's SSD is simple GLA (one scalar decay per head) with q = C, k = B, v = dt x, g = dt A, scale 1, plus
    D x; fla's state is [K = N, V = P], ours mamba_ssm's [P, N]."""
    x, dt = torch.randn(B, T, H, V), F.softplus(torch.randn(B, T, H))
    A, D = -torch.rand(H) * 3, torch.randn(H)
    Bm, Cm = torch.randn(B, T, 1, K), torch.randn(B, T, 1, K)
    h0 = torch.randn(B, H, V, K)
    ref, ref_state = fla_simple_gla.naive_recurrent_simple_gla(
        Cm.expand(B, T, H, K), Bm.expand(B, T, H, K), x * dt[..., None], dt * A, scale=1.0,
        initial_state=h0.transpose(-1, -2), output_final_state=True,
    )  # fmt: skip
    out, state = lr.chunk_ssd(x, dt, A, Bm, Cm, D, initial_state=h0, output_final_state=True, chunk_size=16)
    close(out, ref + D[:, None] * x)
    close(state, ref_state.transpose(-1, -2))
