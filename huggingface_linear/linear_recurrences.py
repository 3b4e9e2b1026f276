"""The three token mixers' recurrences in plain PyTorch: gated linear attention (GLA), the gated delta rule (GDN) and
Mamba2's state-space duality (SSD).

Each comes in three forms computing the same numbers:
- `*_step`: one token, used for decoding;
- `naive_*`: the step applied token by token (the readable definition, and the reference the tests hold to);
- `chunk_*`: the parallel form used for training and prefill. The sequence is cut into chunks; inside a chunk the
  outputs are batched matrix products, and only the state handed from chunk to chunk is a Python loop (T / chunk
  iterations of two small ops). Decays are always formed as differences of cumulative log-gates taken in the right
  order (later minus earlier), so every exponential is <= 1 and nothing overflows, whatever the gates.

Layouts follow the kernels (flash-linear-attention / mamba_ssm): activations [B, T, H, D], states in float32 (float64
stays float64), GLA/GDN state [B, H, dk, dv], SSD state [B, H, P, N]. The dispatchers at the bottom pick
flash-linear-attention or mamba_ssm kernels for CUDA tensors when the packages are installed, else these.
"""

import functools
import math

import torch


@functools.cache
def cuda_kernels() -> dict:
    """The optional CUDA kernels that are installed, imported on first use by a CUDA tensor (importing
    flash-linear-attention takes seconds, and CPU runs never need it)."""
    kernels = {}
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        from fla.ops.gla import chunk_gla

        kernels.update(chunk_gla=chunk_gla, chunk_gated_delta_rule=chunk_gated_delta_rule)
    except ImportError:
        pass
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        kernels["mamba_chunk_scan_combined"] = mamba_chunk_scan_combined
    except ImportError:
        pass
    return kernels


def _kernel(name: str, t: torch.Tensor):
    return cuda_kernels().get(name) if t.is_cuda else None


def state_dtype(t: torch.Tensor) -> torch.dtype:
    """Recurrent states and accumulations: float64 for float64 inputs, else float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _initial(state, shape, like):
    if state is None:
        return like.new_zeros(shape, dtype=state_dtype(like))
    return state.to(state_dtype(like))


def _to_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """[B, T, H, ...] -> [B, H, n, chunk, ...], zero-padding T up to a multiple of `chunk` (zero gates are decay 1
    and zero keys add nothing, so padding never changes the state; padded outputs are dropped)."""
    T = x.shape[1]
    pad = (-T) % chunk
    if pad:
        x = torch.cat([x, x.new_zeros((x.shape[0], pad) + x.shape[2:])], dim=1)
    x = x.movedim(1, 2)  # [B, H, T', ...]
    return x.reshape(x.shape[:2] + (x.shape[2] // chunk, chunk) + x.shape[3:])


def _from_chunks(x: torch.Tensor, T: int) -> torch.Tensor:
    """[B, H, n, chunk, D] -> [B, T, H, D]."""
    return x.flatten(2, 3)[:, :, :T].movedim(2, 1)


def _causal(chunk: int, device, strict: bool = False) -> torch.Tensor:
    return torch.ones(chunk, chunk, dtype=torch.bool, device=device).tril(-1 if strict else 0)


def decay(log_decay: torch.Tensor, mask=None) -> torch.Tensor:
    """exp(log_decay) (where `mask`, 0 elsewhere), with values below the dtype's smallest normal number flushed to
    exactly 0: subnormal operands make CPU arithmetic, matrix products included, many times slower (strong decays over
    a chunk produce them), and they lie below the precision of the result."""
    flush = log_decay < math.log(torch.finfo(log_decay.dtype).tiny)
    if mask is not None:
        flush = flush | ~mask
    return log_decay.masked_fill(flush, float("-inf")).exp()


def _pairwise_decay(cum: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exp(cum_t - cum_s) where mask[t, s] (t later), 0 elsewhere; cum [..., C] -> [..., C, C]."""
    return decay(cum[..., :, None] - cum[..., None, :], mask)


# ----------------------------------------------------------------------------------------------------------------
# Gated linear attention: S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T,  o_t = S_t^T (scale q_t)
# ----------------------------------------------------------------------------------------------------------------


def gla_step(q, k, v, gk, state, scale):
    """One token: q, k, gk [B, H, dk], v [B, H, dv], state [B, H, dk, dv] -> (o [B, H, dv], new state)."""
    dt = state.dtype
    state = state * gk.to(dt).exp()[..., None] + k.to(dt)[..., None] * v.to(dt)[..., None, :]
    o = torch.einsum("bhk,bhkv->bhv", q.to(dt) * scale, state)
    return o, state


def naive_recurrent_gla(q, k, v, gk, scale=None, initial_state=None, output_final_state=False):
    """Token-by-token GLA. q, k, gk [B, T, H, dk] (gk = log decay <= 0), v [B, T, H, dv]."""
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    state = _initial(initial_state, (B, H, K, v.shape[-1]), q)
    outs = []
    for t in range(T):
        o, state = gla_step(q[:, t], k[:, t], v[:, t], gk[:, t], state, scale)
        outs.append(o)
    return torch.stack(outs, dim=1).to(v.dtype), state if output_final_state else None


def _gla_intra_scores(q, k, b, sub):
    """scores[t, s] = sum_c q_tc k_sc exp(b_tc - b_sc) for s <= t inside each chunk: [..., C, dk] -> [..., C, C].

    The chunk is cut into blocks of `sub` tokens. Within a block the decays are taken pair by pair, for the
    sub (sub + 1) / 2 causal pairs only. Across blocks (key block j before query block i) exp(b_t - b_s) factors into
    exp(b_t - e_{i-1}) exp(e_{i-1} - e_j) exp(e_j - b_s), with e_j the cumulative gate at the end of block j: every
    exponent is <= 0, and the contraction over dk becomes a batched matrix product.
    """
    *lead, C, K = q.shape
    m = C // sub
    qb, kb, bb = (x.reshape(*lead, m, sub, K) for x in (q, k, b))
    t_idx, s_idx = torch.tril_indices(sub, sub, device=q.device)  # the causal pairs s <= t of a block
    q_t, b_t = qb.index_select(-2, t_idx), bb.index_select(-2, t_idx)
    k_s, b_s = kb.index_select(-2, s_idx), bb.index_select(-2, s_idx)
    pairs = (q_t * k_s * decay(b_t - b_s)).sum(-1)
    diag = pairs.new_zeros(*pairs.shape[:-1], sub * sub).index_copy(-1, t_idx * sub + s_idx, pairs)
    diag = diag.unflatten(-1, (sub, sub))  # [..., m, sub, sub]
    ends = bb[..., -1, :]  # e_j  [..., m, dk]
    before = torch.cat([torch.zeros_like(ends[..., :1, :]), ends[..., :-1, :]], dim=-2)  # e_{i-1}, 0 for i = 0
    q_hat = qb * decay(bb - before[..., :, None, :])  # [..., m(i), sub, dk]
    k_hat = kb * decay(ends[..., :, None, :] - bb)  # [..., m(j), sub, dk]
    later = _causal(m, q.device, strict=True).T[:, :, None]  # [j, i]: j before i
    mid = decay(before[..., None, :, :] - ends[..., :, None, :], later)  # [..., j, i, dk]
    across = (mid[..., :, :, None, :] * q_hat[..., None, :, :, :]).flatten(-3, -2) @ k_hat.transpose(-1, -2)
    across = across.unflatten(-2, (m, sub)).movedim(-4, -2)  # [..., j, i, t, s] -> [..., i, t, j, s]; 0 for j >= i
    eye = torch.eye(m, dtype=q.dtype, device=q.device)
    full = across + diag[..., :, :, None, :] * eye[:, None, :, None]
    return full.reshape(*lead, C, C)


def chunk_gla(q, k, v, gk, scale=None, initial_state=None, output_final_state=False, chunk_size=64, sub_chunk=8):
    """Chunked GLA (same arguments as `naive_recurrent_gla`).

    Inside a chunk with cumulative log decay b_t (a vector over dk), token t reads
    scale * [(q_t * exp(b_t))^T S_0 + sum_{s<=t} (sum_c q_tc k_sc exp(b_tc - b_sc)) v_s],
    and the chunk hands on S_end = diag(exp(b_last)) S_0 + sum_s (k_s * exp(b_last - b_s)) v_s^T.
    """
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    dt, out_dtype = state_dtype(q), v.dtype
    q, k, v, gk = (_to_chunks(x.to(dt), chunk_size) for x in (q, k, v, gk))  # [B, H, n, C, D]
    b = gk.cumsum(-2)
    b_last = b[..., -1:, :]  # [B, H, n, 1, dk]
    scores = _gla_intra_scores(q, k, b, sub_chunk)
    updates = (k * decay(b_last - b)).transpose(-1, -2) @ v  # [B, H, n, dk, dv]: what each chunk adds
    chunk_decay = decay(b_last.squeeze(-2))[..., None]  # [B, H, n, dk, 1]
    state = _initial(initial_state, (B, H, K, v.shape[-1]), q)
    starts = []
    for n in range(q.shape[2]):
        starts.append(state)
        state = chunk_decay[:, :, n] * state + updates[:, :, n]
    starts = torch.stack(starts, dim=2)  # [B, H, n, dk, dv]: the state entering each chunk
    o = (q * decay(b)) @ starts + scores @ v
    return _from_chunks(o * scale, T).to(out_dtype), state if output_final_state else None


# ----------------------------------------------------------------------------------------------------------------
# Gated delta rule: S <- exp(g_t) S; u_t = beta_t (v_t - S^T k_t); S <- S + k_t u_t^T; o_t = S^T (scale q_t)
# (q and k arrive L2-normalised per head)
# ----------------------------------------------------------------------------------------------------------------


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum x^2 + eps) over the last dimension, computed in at least float32."""
    x32 = x.to(state_dtype(x))
    return (x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def gated_delta_step(q, k, v, g, beta, state, scale):
    """One token: q, k [B, H, dk], v [B, H, dv], g, beta [B, H], state [B, H, dk, dv] -> (o, new state)."""
    dt = state.dtype
    q, k, v, g, beta = (x.to(dt) for x in (q, k, v, g, beta))
    state = state * g.exp()[..., None, None]
    u = beta[..., None] * (v - torch.einsum("bhk,bhkv->bhv", k, state))
    state = state + k[..., None] * u[..., None, :]
    return torch.einsum("bhk,bhkv->bhv", q * scale, state), state


def naive_recurrent_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """Token-by-token gated delta rule. q, k [B, T, H, dk], v [B, T, H, dv], g (log decay), beta [B, T, H]."""
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    state = _initial(initial_state, (B, H, K, v.shape[-1]), q)
    outs = []
    for t in range(T):
        o, state = gated_delta_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], state, scale)
        outs.append(o)
    return torch.stack(outs, dim=1).to(v.dtype), state if output_final_state else None


def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, chunk_size=64):
    """Chunked gated delta rule (WY form; same arguments as `naive_recurrent_gated_delta_rule`).

    With chunk-local G_t = sum_{s<=t} g_s, the chunk's corrections u solve the unit lower-triangular system
    u_t + sum_{s<t} beta_t e^{G_t - G_s} (k_t.k_s) u_s = beta_t (v_t - e^{G_t} S_0^T k_t), i.e. u = U0 - W S_0 with
    U0, W independent of the state (solved for all chunks at once). Then o_t = scale [e^{G_t} S_0^T q_t +
    sum_{s<=t} e^{G_t - G_s} (q_t.k_s) u_s] and S_end = e^{G_last} S_0 + sum_s e^{G_last - G_s} k_s u_s^T.
    """
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    dt, out_dtype = state_dtype(q), v.dtype
    C = chunk_size
    q, k, v = (_to_chunks(x.to(dt), C) for x in (q, k, v))  # [B, H, n, C, D]
    g, beta = (_to_chunks(x.to(dt)[..., None], C)[..., 0] for x in (g, beta))  # [B, H, n, C]
    G = g.cumsum(-1)
    kk = k @ k.transpose(-1, -2)
    lower = beta[..., None] * _pairwise_decay(G, _causal(C, q.device, strict=True)) * kk
    system = lower + torch.eye(C, dtype=dt, device=q.device)
    U0 = torch.linalg.solve_triangular(system, beta[..., None] * v, upper=False, unitriangular=True)
    W = torch.linalg.solve_triangular(system, (beta * decay(G))[..., None] * k, upper=False, unitriangular=True)
    G_last = G[..., -1:]
    k_to_end = k * decay(G_last - G)[..., None]
    chunk_decay = decay(G_last)[..., None]  # [B, H, n, 1, 1]
    state = _initial(initial_state, (B, H, K, v.shape[-1]), q)
    starts, corrections = [], []
    for n in range(q.shape[2]):
        u = U0[:, :, n] - W[:, :, n] @ state
        starts.append(state)
        corrections.append(u)
        state = chunk_decay[:, :, n] * state + k_to_end[:, :, n].transpose(-1, -2) @ u
    starts, u = torch.stack(starts, dim=2), torch.stack(corrections, dim=2)
    attend = _pairwise_decay(G, _causal(C, q.device)) * (q @ k.transpose(-1, -2))
    o = (q * decay(G)[..., None]) @ starts + attend @ u
    return _from_chunks(o * scale, T).to(out_dtype), state if output_final_state else None


# ----------------------------------------------------------------------------------------------------------------
# Mamba2 SSD: S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,  y_t = S_t C_t + D x_t   (per head; S [P, N])
# ----------------------------------------------------------------------------------------------------------------


def _heads_of_groups(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, G, N] -> [B, T, H, N]: head h reads group h // (H / G)."""
    return t.repeat_interleave(heads // t.shape[2], dim=2)


def ssd_step(x, dt, A, Bm, Cm, D, state):
    """One token: x [B, H, P], dt [B, H] (after softplus), A [H] (< 0), Bm, Cm [B, G, N], D [H] or None,
    state [B, H, P, N] -> (y [B, H, P], new state)."""
    H, ft = x.shape[1], state.dtype
    Bm, Cm = (t.repeat_interleave(H // t.shape[1], dim=1).to(ft) for t in (Bm, Cm))
    x, dt = x.to(ft), dt.to(ft)
    state = state * (dt * A.to(ft)).exp()[..., None, None] + (dt[..., None] * x)[..., None] * Bm[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", state, Cm)
    if D is not None:
        y = y + D.to(ft)[:, None] * x
    return y, state


def naive_ssd(x, dt, A, Bm, Cm, D=None, initial_state=None, output_final_state=False):
    """Token-by-token SSD. x [B, T, H, P], dt [B, T, H], A [H], Bm, Cm [B, T, G, N], D [H] or None."""
    B, T, H, P = x.shape
    state = _initial(initial_state, (B, H, P, Bm.shape[-1]), x)
    outs = []
    for t in range(T):
        y, state = ssd_step(x[:, t], dt[:, t], A, Bm[:, t], Cm[:, t], D, state)
        outs.append(y)
    return torch.stack(outs, dim=1).to(x.dtype), state if output_final_state else None


def chunk_ssd(x, dt, A, Bm, Cm, D=None, initial_state=None, output_final_state=False, chunk_size=64):
    """Chunked SSD (same arguments as `naive_ssd`). The decay is one scalar per head and token, so the intra-chunk
    mask is [C, C] per head: y = tril(e^{a_t - a_s} C_t.B_s) (dt x) + e^{a_t} S_0 C_t + D x with a = cumsum(dt A);
    S_end = e^{a_last} S_0 + sum_s e^{a_last - a_s} dt_s x_s B_s^T."""
    Bsz, T, H, P = x.shape
    ft = state_dtype(x)
    C = chunk_size
    xdt = _to_chunks(x.to(ft) * dt.to(ft)[..., None], C)  # [B, H, n, C, P]
    Bm, Cm = (_to_chunks(_heads_of_groups(t, H).to(ft), C) for t in (Bm, Cm))  # [B, H, n, C, N]
    a = _to_chunks((dt.to(ft) * A.to(ft))[..., None], C)[..., 0].cumsum(-1)  # [B, H, n, C]
    a_last = a[..., -1:]
    mix = _pairwise_decay(a, _causal(C, x.device)) * (Cm @ Bm.transpose(-1, -2))
    updates = (xdt * decay(a_last - a)[..., None]).transpose(-1, -2) @ Bm  # [B, H, n, P, N]
    chunk_decay = decay(a_last)[..., None]  # [B, H, n, 1, 1]
    state = _initial(initial_state, (Bsz, H, P, Bm.shape[-1]), x)
    starts = []
    for n in range(xdt.shape[2]):
        starts.append(state)
        state = chunk_decay[:, :, n] * state + updates[:, :, n]
    starts = torch.stack(starts, dim=2)  # [B, H, n, P, N]
    y = (Cm * decay(a)[..., None]) @ starts.transpose(-1, -2) + mix @ xdt
    if D is not None:
        y = y + D.to(ft)[:, None, None, None] * _to_chunks(x.to(ft), C)
    return _from_chunks(y, T).to(x.dtype), state if output_final_state else None


# ----------------------------------------------------------------------------------------------------------------
# Dispatch: one token -> step; CUDA with the kernels installed -> kernels; otherwise the chunked forms
# ----------------------------------------------------------------------------------------------------------------


def gla(q, k, v, gk, initial_state=None, output_final_state=False):
    if q.shape[1] == 1 and initial_state is not None:
        o, state = gla_step(q[:, 0], k[:, 0], v[:, 0], gk[:, 0], initial_state, q.shape[-1] ** -0.5)
        return o[:, None].to(v.dtype), state
    kernel = _kernel("chunk_gla", q)
    if kernel is not None:
        return kernel(q, k, v, g=gk, initial_state=initial_state, output_final_state=output_final_state)
    return chunk_gla(q, k, v, gk, initial_state=initial_state, output_final_state=output_final_state)


def gated_delta_rule(q, k, v, g, beta, initial_state=None, output_final_state=False):
    """q and k are L2-normalised here (the kernel's use_qk_l2norm_in_kernel)."""
    if q.shape[1] == 1 and initial_state is not None:
        q, k = l2_normalize(q), l2_normalize(k)
        o, state = gated_delta_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0], initial_state, q.shape[-1] ** -0.5)
        return o[:, None].to(v.dtype), state
    kernel = _kernel("chunk_gated_delta_rule", q)
    if kernel is not None and q.dtype in (torch.bfloat16, torch.float16):  # the kernel refuses float32
        return kernel(
            q, k, v, g=g, beta=beta, initial_state=initial_state, output_final_state=output_final_state,
            use_qk_l2norm_in_kernel=True,
        )  # fmt: skip
    q, k = l2_normalize(q), l2_normalize(k)
    return chunk_gated_delta_rule(q, k, v, g, beta, initial_state=initial_state, output_final_state=output_final_state)


def ssd(x, dt, A, Bm, Cm, D=None, initial_state=None, output_final_state=False):
    """dt here is softplus(dt_raw + dt_bias), already clamped to time_step_limit."""
    if x.shape[1] == 1 and initial_state is not None:
        y, state = ssd_step(x[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0], D, initial_state)
        return y[:, None].to(x.dtype), state
    kernel = _kernel("mamba_chunk_scan_combined", x)
    if kernel is not None:
        y, state = kernel(x, dt, A, Bm, Cm, chunk_size=256, D=D, initial_states=initial_state, return_final_states=True)
        return y, state if output_final_state else None
    return chunk_ssd(x, dt, A, Bm, Cm, D, initial_state=initial_state, output_final_state=output_final_state)
