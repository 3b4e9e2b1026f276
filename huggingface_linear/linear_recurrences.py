"""The three token mixers' recurrences in plain PyTorch: gated linear attention (GLA), the gated delta rule (GDN) and
Mamba2's state-space duality (SSD).

Each comes in three forms computing the same numbers:
- `*_step`: one token, used for decoding;
- `naive_*`: the step applied token by token (the readable definition, and the oracle the tests hold to);
- `chunk_*`: the parallel form used for training and prefill. The sequence is cut into chunks; inside a chunk the
  outputs are batched matrix products, and the chunks are visited in order, each reading the state left by the one
  before. A chunk's work is done while its tensors are small (a few hundred KiB, in cache): whole-sequence
  intermediates would be tens of MiB, and on CPU every fresh allocation that large costs page faults, which made the
  vectorised-over-all-chunks form slower than the matrix products themselves. Decays are formed as differences of
  cumulative log-gates taken in the right order (later minus earlier), so every exponential is <= 1; the one
  exception, GLA's factorised chunk, is used only where its factors provably stay far inside the dtype's range.

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


def _heads_first(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows start:stop of [B, T, H, ...] as [B * H, rows, ...] (a copy of one chunk, laid out for batched products)."""
    return x[:, start:stop].movedim(2, 1).flatten(0, 1)


def _per_head(x: torch.Tensor) -> torch.Tensor:
    """[B, T, H] -> [B * H, T] (a copy; per-token scalars are small)."""
    return x.movedim(2, 1).flatten(0, 1)


def _chunk_cumsum(log_decay: torch.Tensor, chunk: int) -> torch.Tensor:
    """[BH, T] -> [BH, n, chunk]: cumulative sums within each chunk, T zero-padded to a multiple of `chunk` (a zero
    log decay changes nothing)."""
    padded = torch.nn.functional.pad(log_decay, (0, (-log_decay.shape[1]) % chunk))
    return padded.unflatten(1, (-1, chunk)).cumsum(-1)


def _causal(chunk: int, device, strict: bool = False) -> torch.Tensor:
    return torch.ones(chunk, chunk, dtype=torch.bool, device=device).tril(-1 if strict else 0)


def decay(log_decay: torch.Tensor, mask=None) -> torch.Tensor:
    """exp(log_decay) (where `mask`, 0 elsewhere), with values below the square root of the dtype's smallest normal
    number (1e-19 in float32, 1e-154 in float64) flushed to exactly 0: subnormal operands make CPU arithmetic, matrix
    products included, many times slower, and a decay just above the smallest normal number still makes subnormals
    once multiplied by an activation below 1 (strong decays over a chunk produce them; Mamba2's chunked form ran 2x
    slower for it). The flushed terms lie far below the precision of the result."""
    flush = log_decay < math.log(torch.finfo(log_decay.dtype).tiny) / 2
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


def _gla_chunk_factored(q, k, v, b, state, scale):
    """One chunk of GLA whose cumulative log decay b stays within [-L, 0] (L = half the log of the dtype's largest
    number): exp(b_t - b_s) = exp(b_t) exp(-b_s) with both factors normal numbers, so the pair scores are one matrix
    product of q * exp(b) and k * exp(-b), exact to rounding. q, k, b [BH, C, dk], v [BH, C, dv], state [BH, dk, dv]."""
    eb = b.exp()
    eb_last = eb[:, -1:]
    qe, ke = (q * eb).mul_(scale), k / eb  # scaling q scales both the read-out and the scores
    scores = torch.bmm(qe, ke.transpose(1, 2)).tril_()
    o = torch.bmm(qe, state).baddbmm_(scores, v)
    state = torch.bmm((ke * eb_last).transpose(1, 2), v).addcmul_(state, eb_last.transpose(1, 2))
    return o, state


def _gla_chunk_pairwise(q, k, v, b, state, scale, sub_chunk):
    """One chunk of GLA with any decays (same arguments as `_gla_chunk_factored`): the pair scores come from
    `_gla_intra_scores`, whose every exponential is <= 1; slower, for chunks that decay too strongly to factorise."""
    C = q.shape[1]
    pad = (-C) % sub_chunk  # a short last chunk: zero queries and keys, the log decay held at its last value
    qp, kp = (torch.cat([x, x.new_zeros(x.shape[0], pad, x.shape[2])], 1) for x in (q, k))
    bp = torch.cat([b, b[:, -1:].expand(-1, pad, -1)], 1)
    scores = _gla_intra_scores(qp, kp, bp, sub_chunk)[:, :C, :C]
    o = torch.bmm(q * decay(b), state).baddbmm_(scores, v).mul_(scale)
    b_last = b[:, -1:]
    state = torch.bmm((k * decay(b_last - b)).transpose(1, 2), v).addcmul_(state, decay(b_last).transpose(1, 2))
    return o, state


def chunk_gla(q, k, v, gk, scale=None, initial_state=None, output_final_state=False, chunk_size=64, sub_chunk=8):
    """Chunked GLA (same arguments as `naive_recurrent_gla`).

    Inside a chunk with cumulative log decay b_t (a vector over dk), token t reads
    scale * [(q_t * exp(b_t))^T S_0 + sum_{s<=t} (sum_c q_tc k_sc exp(b_tc - b_sc)) v_s],
    and the chunk hands on S_end = diag(exp(b_last)) S_0 + sum_s (k_s * exp(b_last - b_s)) v_s^T.
    The pair scores need exp(b_tc - b_sc) per key channel; a chunk whose decay stays within the range where
    exp(b) exp(-b) factorises exactly (every chunk at usual gate values) gets them from one matrix product, the others
    from the slower pairwise blocks of `_gla_intra_scores`.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dt, out_dtype = state_dtype(q), v.dtype
    q, k, v, gk = (x.to(dt) for x in (q, k, v, gk))
    limit = math.log(torch.finfo(dt).max) / 2  # e^-limit and e^limit are normal numbers with room to spare
    state = _initial(initial_state, (B, H, K, V), q).flatten(0, 1)  # [BH, dk, dv]
    outs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc, gc = (_heads_first(x, start, start + chunk_size) for x in (q, k, v, gk))
        b = gc.cumsum(1)
        if b[:, -1].amin() >= -limit:
            o, state = _gla_chunk_factored(qc, kc, vc, b, state, scale)
        else:
            o, state = _gla_chunk_pairwise(qc, kc, vc, b, state, scale, sub_chunk)
        outs.append(o.unflatten(0, (B, H)).transpose(1, 2))
    return torch.cat(outs, 1).to(out_dtype), state.unflatten(0, (B, H)) if output_final_state else None


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
    u_t + sum_{s<t} beta_t e^{G_t - G_s} (k_t.k_s) u_s = beta_t (v_t - e^{G_t} S_0^T k_t). Then o_t = scale [e^{G_t}
    S_0^T q_t + sum_{s<=t} e^{G_t - G_s} (q_t.k_s) u_s] and S_end = e^{G_last} S_0 + sum_s e^{G_last - G_s} k_s u_s^T.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dt, out_dtype = state_dtype(q), v.dtype
    q, k, v = (x.to(dt) for x in (q, k, v))
    beta = _per_head(beta.to(dt))
    G_all = _chunk_cumsum(_per_head(g.to(dt)), chunk_size)  # [BH, n, C]
    from_start, to_end = decay(G_all), decay(G_all[..., -1:] - G_all)
    pairs = _pairwise_decay(G_all, _causal(chunk_size, q.device))  # [BH, n, C, C]
    state = _initial(initial_state, (B, H, K, V), q).flatten(0, 1)  # [BH, dk, dv]
    outs = []
    for n, start in enumerate(range(0, T, chunk_size)):
        qc, kc, vc = (_heads_first(x, start, start + chunk_size) for x in (q, k, v))
        C = qc.shape[1]
        bc = beta[:, start : start + C, None]
        eG, e_end = from_start[:, n, :C, None], to_end[:, n, :C, None]
        D = pairs[:, n, :C, :C]
        kb = kc * bc
        # the solver reads only the strict lower triangle (unitriangular), so the diagonal needs no masking
        system = D * torch.bmm(kb, kc.transpose(1, 2))
        rhs = torch.bmm(kb * -eG, state).addcmul_(vc, bc)
        # solved as u^T system^T = rhs^T: the transposes are column-major views, which LAPACK takes without copies
        u = torch.linalg.solve_triangular(
            system.transpose(1, 2), rhs.transpose(1, 2), upper=True, left=False, unitriangular=True
        ).transpose(1, 2)
        attend = D * torch.bmm(qc, kc.transpose(1, 2))
        o = torch.bmm(qc * (eG * scale), state).baddbmm_(attend, u, alpha=scale)
        state = torch.bmm((kc * e_end).transpose(1, 2), u).addcmul_(state, from_start[:, n, -1, None, None])
        outs.append(o.unflatten(0, (B, H)).transpose(1, 2))
    return torch.cat(outs, 1).to(out_dtype), state.unflatten(0, (B, H)) if output_final_state else None


# ----------------------------------------------------------------------------------------------------------------
# Mamba2 SSD: S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,  y_t = S_t C_t + D x_t   (per head; S [P, N])
# ----------------------------------------------------------------------------------------------------------------


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
    G, N = Bm.shape[2:]
    ft, out_dtype = state_dtype(x), x.dtype
    x, dt, Bm, Cm = (t.to(ft) for t in (x, dt, Bm, Cm))
    a_all = _chunk_cumsum(_per_head(dt * A.to(ft)), chunk_size)  # [BH, n, C]
    from_start, to_end = decay(a_all), decay(a_all[..., -1:] - a_all)
    pairs = _pairwise_decay(a_all, _causal(chunk_size, x.device))  # [BH, n, C, C]
    dt = _per_head(dt)
    skip = None if D is None else D.to(ft).repeat(Bsz)[:, None, None]  # [BH, 1, 1]
    state = _initial(initial_state, (Bsz, H, P, N), x).flatten(0, 1)  # [BH, P, N]
    outs = []
    for n, start in enumerate(range(0, T, chunk_size)):
        xc = _heads_first(x, start, start + chunk_size)
        C = xc.shape[1]
        # head h reads group h // (H / G)
        Bc, Cc = (_heads_first(t, start, start + C).unflatten(0, (Bsz, G)) for t in (Bm, Cm))
        Bc, Cc = (t.repeat_interleave(H // G, dim=1).flatten(0, 1) for t in (Bc, Cc))  # [BH, C, N]
        xdt = xc * dt[:, start : start + C, None]
        mix = pairs[:, n, :C, :C] * torch.bmm(Cc, Bc.transpose(1, 2))
        y = torch.bmm(Cc * from_start[:, n, :C, None], state.transpose(1, 2)).baddbmm_(mix, xdt)
        if skip is not None:
            y = y.addcmul_(xc, skip)
        to_end_c = Bc * to_end[:, n, :C, None]
        state = torch.bmm(xdt.transpose(1, 2), to_end_c).addcmul_(state, from_start[:, n, -1, None, None])
        outs.append(y.unflatten(0, (Bsz, H)).transpose(1, 2))
    return torch.cat(outs, 1).to(out_dtype), state.unflatten(0, (Bsz, H)) if output_final_state else None


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
