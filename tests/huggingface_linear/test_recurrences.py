"""The chunked forms (training, prefill) against the token-by-token recurrences, in float64; gradients by gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from huggingface_linear import linear_recurrences as lr

F64 = torch.float64


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def gla_inputs(B=2, T=37, H=3, K=5, V=7, gate_scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, T, H, K, generator=g, dtype=F64), torch.randn(B, T, H, K, generator=g, dtype=F64)
    v = torch.randn(B, T, H, V, generator=g, dtype=F64)
    gk = F.logsigmoid(gate_scale * torch.randn(B, T, H, K, generator=g, dtype=F64))
    state = torch.randn(B, H, K, V, generator=g, dtype=F64)
    return q, k, v, gk, state


def gdn_inputs(B=2, T=37, H=3, K=5, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = lr.l2_normalize(torch.randn(B, T, H, K, generator=g, dtype=F64))
    k = lr.l2_normalize(torch.randn(B, T, H, K, generator=g, dtype=F64))
    v = torch.randn(B, T, H, V, generator=g, dtype=F64)
    gate = F.logsigmoid(torch.randn(B, T, H, generator=g, dtype=F64))
    beta = torch.rand(B, T, H, generator=g, dtype=F64)
    state = torch.randn(B, H, K, V, generator=g, dtype=F64)
    return q, k, v, gate, beta, state


def ssd_inputs(B=2, T=37, H=4, P=6, N=5, G=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, H, P, generator=g, dtype=F64)
    dt = F.softplus(torch.randn(B, T, H, generator=g, dtype=F64))
    A = -torch.rand(H, generator=g, dtype=F64) * 4
    Bm, Cm = torch.randn(B, T, G, N, generator=g, dtype=F64), torch.randn(B, T, G, N, generator=g, dtype=F64)
    D = torch.randn(H, generator=g, dtype=F64)
    state = torch.randn(B, H, P, N, generator=g, dtype=F64)
    return x, dt, A, Bm, Cm, D, state


@pytest.mark.parametrize("T, chunk, sub", [(37, 16, 4), (64, 64, 8), (5, 8, 2), (50, 32, 32)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_gla_equals_recurrence(T, chunk, sub, with_state):
    q, k, v, gk, state = gla_inputs(T=T)
    init = state if with_state else None
    ref, ref_state = lr.naive_recurrent_gla(q, k, v, gk, initial_state=init, output_final_state=True)
    out, out_state = lr.chunk_gla(q, k, v, gk, initial_state=init, output_final_state=True, chunk_size=chunk,
                                  sub_chunk=sub)  # fmt: skip
    assert rel_err(out, ref) <= 1e-9 and rel_err(out_state, ref_state) <= 1e-9


def test_chunk_gla_is_stable_under_extreme_decays():
    """Decays of exp(-300) per step overflow any q*exp(b)/k*exp(-b) factorisation; differences never do."""
    q, k, v, _, _ = gla_inputs(T=40)
    gk = torch.full_like(q, -300.0)
    gk[:, ::7] = 0.0
    ref, _ = lr.naive_recurrent_gla(q, k, v, gk)
    out, _ = lr.chunk_gla(q, k, v, gk, chunk_size=16, sub_chunk=4)
    assert torch.isfinite(out).all() and rel_err(out, ref) <= 1e-9


def test_chunk_gla_mixes_factorised_and_pairwise_chunks():
    """Only the chunk with decays beyond the factorisable range (e^-354 in float64) takes the pairwise path; a
    ragged last chunk takes it too, padded to whole blocks. Both hand the state on exactly."""
    q, k, v, gk, state = gla_inputs(T=45)
    gk = gk.clone()
    gk[:, 16:32] = -60.0  # chunk 2 of 16 decays by e^-960 in every channel
    gk[:, 40:] = -100.0  # the last chunk (13 tokens, blocks of 4) too
    ref, ref_state = lr.naive_recurrent_gla(q, k, v, gk, initial_state=state, output_final_state=True)
    out, out_state = lr.chunk_gla(q, k, v, gk, initial_state=state, output_final_state=True, chunk_size=16,
                                  sub_chunk=4)  # fmt: skip
    assert rel_err(out, ref) <= 1e-9 and rel_err(out_state, ref_state) <= 1e-9


@pytest.mark.parametrize("T, chunk", [(37, 16), (64, 32), (3, 8)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_gated_delta_rule_equals_recurrence(T, chunk, with_state):
    q, k, v, gate, beta, state = gdn_inputs(T=T)
    init = state if with_state else None
    ref, ref_state = lr.naive_recurrent_gated_delta_rule(q, k, v, gate, beta, initial_state=init,
                                                         output_final_state=True)  # fmt: skip
    out, out_state = lr.chunk_gated_delta_rule(q, k, v, gate, beta, initial_state=init, output_final_state=True,
                                               chunk_size=chunk)  # fmt: skip
    assert rel_err(out, ref) <= 1e-9 and rel_err(out_state, ref_state) <= 1e-9


@pytest.mark.parametrize("T, chunk, groups", [(37, 16, 1), (64, 64, 2), (5, 8, 4)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_ssd_equals_recurrence(T, chunk, groups, with_state):
    x, dt, A, Bm, Cm, D, state = ssd_inputs(T=T, G=groups)
    init = state if with_state else None
    ref, ref_state = lr.naive_ssd(x, dt, A, Bm, Cm, D, initial_state=init, output_final_state=True)
    out, out_state = lr.chunk_ssd(x, dt, A, Bm, Cm, D, initial_state=init, output_final_state=True, chunk_size=chunk)
    assert rel_err(out, ref) <= 1e-9 and rel_err(out_state, ref_state) <= 1e-9


def test_ssd_head_reads_its_group():
    """Head h uses group h // (H / G): with G = H each head sees only its own B, C."""
    x, dt, A, Bm, Cm, D, _ = ssd_inputs(T=9, H=2, G=2)
    y, _ = lr.naive_ssd(x, dt, A, Bm, Cm, D)
    for h in range(2):
        alone, _ = lr.naive_ssd(x[:, :, h : h + 1], dt[:, :, h : h + 1], A[h : h + 1], Bm[:, :, h : h + 1],
                                Cm[:, :, h : h + 1], D[h : h + 1])  # fmt: skip
        torch.testing.assert_close(y[:, :, h : h + 1], alone)


def test_gla_matches_its_definition_written_out():
    """An independent few-line loop of GLA's recurrence (per key-channel decay, scale dk^-1/2)."""
    q, k, v, gk, _ = gla_inputs(B=1, T=6, H=1, K=3, V=2)
    S = torch.zeros(3, 2, dtype=F64)
    expected = []
    for t in range(6):
        S = torch.diag(gk[0, t, 0].exp()) @ S + torch.outer(k[0, t, 0], v[0, t, 0])
        expected.append(S.T @ (q[0, t, 0] / 3**0.5))
    out, _ = lr.chunk_gla(q, k, v, gk, chunk_size=4, sub_chunk=2)
    torch.testing.assert_close(out[0, :, 0], torch.stack(expected))


def test_gated_delta_rule_matches_its_definition_written_out():
    """S_t = e^{g_t} (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t / sqrt(dk)."""
    q, k, v, gate, beta, _ = gdn_inputs(B=1, T=6, H=1, K=3, V=2)
    S = torch.zeros(3, 2, dtype=F64)
    expected = []
    for t in range(6):
        kt, b = k[0, t, 0], beta[0, t, 0]
        S = gate[0, t, 0].exp() * (torch.eye(3, dtype=F64) - b * torch.outer(kt, kt)) @ S + b * torch.outer(
            kt, v[0, t, 0]
        )
        expected.append(S.T @ q[0, t, 0] / 3**0.5)
    out, _ = lr.chunk_gated_delta_rule(q, k, v, gate, beta, chunk_size=4)
    torch.testing.assert_close(out[0, :, 0], torch.stack(expected))


def tiny(t):
    return t.detach().clone().requires_grad_(True)


@pytest.mark.parametrize("strong_decay", [False, True])
def test_gradcheck_chunk_gla(strong_decay):
    q, k, v, gk, state = gla_inputs(B=1, T=6, H=1, K=2, V=2)
    if strong_decay:  # the second chunk decays by e^-800: the pairwise path
        gk[:, 4:] = -400.0
    q, k, v, gk, state = (tiny(t) for t in (q, k, v, gk, state))
    fn = lambda q, k, v, gk, s: lr.chunk_gla(q, k, v, gk, initial_state=s, output_final_state=True,  # noqa: E731
                                              chunk_size=4, sub_chunk=2)  # fmt: skip
    assert torch.autograd.gradcheck(fn, (q, k, v, gk, state))


def test_gradcheck_chunk_gated_delta_rule():
    q, k, v, gate, beta, state = (tiny(t) for t in gdn_inputs(B=1, T=6, H=1, K=2, V=2))
    fn = lambda q, k, v, g, b, s: lr.chunk_gated_delta_rule(q, k, v, g, b, initial_state=s,  # noqa: E731
                                                            output_final_state=True, chunk_size=4)  # fmt: skip
    assert torch.autograd.gradcheck(fn, (q, k, v, gate, beta, state))


def test_gradcheck_chunk_ssd():
    x, dt, A, Bm, Cm, D, state = (tiny(t) for t in ssd_inputs(B=1, T=7, H=2, P=2, N=3, G=1))
    fn = lambda *a: lr.chunk_ssd(*a[:6], initial_state=a[6], output_final_state=True, chunk_size=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, dt, A, Bm, Cm, D, state))


def test_dispatch_steps_one_token_and_chunks_many():
    q, k, v, gk, state = gla_inputs(T=9)
    full, full_state = lr.gla(q, k, v, gk, output_final_state=True)
    head, s = lr.gla(q[:, :5], k[:, :5], v[:, :5], gk[:, :5], output_final_state=True)
    outs = [head]
    for t in range(5, 9):
        o, s = lr.gla(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], gk[:, t : t + 1], initial_state=s,
                      output_final_state=True)  # fmt: skip
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), full)
    torch.testing.assert_close(s, full_state)


def test_float32_inputs_keep_a_float32_state_and_return_their_dtype():
    q, k, v, gate, beta, _ = (t.float() for t in gdn_inputs(T=20))
    out, state = lr.gated_delta_rule(q, k, v, gate, beta, output_final_state=True)
    assert out.dtype == torch.float32 and state.dtype == torch.float32
    out16, state16 = lr.gated_delta_rule(q.bfloat16(), k.bfloat16(), v.bfloat16(), gate, beta, output_final_state=True)
    assert out16.dtype == torch.bfloat16 and state16.dtype == torch.float32
    torch.testing.assert_close(out16.float(), out, atol=0.05, rtol=0.05)
