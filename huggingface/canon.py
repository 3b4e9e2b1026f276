"""Canon layers: residual depthwise causal convolutions along time. Torch only (no transformers), one flat file that
the Hugging Face models, the linear models and the Lingua trainer all import (save_pretrained copies it next to the
weights; `huggingface_linear/canon.py` and `lingua_modified/lingua/canon.py` are links to it).

A Canon layer maps x [B, T, C] to x + conv(x), where conv is a per-channel causal convolution of kernel K whose last
tap multiplies the current token (PyTorch's cross-correlation orientation, weight [C, 1, K]), optionally with a bias,
SiLU, and without the residual.

Read top to bottom:
- `canon_reference`: the plain definition, a few lines on torch's Conv1d; the tests' oracle, never used to train.
- `shifted_conv`: the conv as K shifted multiply-adds over padded views, forward and (hand-written) backward.
  Pointwise only, so under torch.compile it fuses with the RMSNorm before it, the residual after it and the q/k/v
  split around Canon-B; `shifted_swiglu` is Canon-D with the SwiGLU after it in one function. They also serve
  document resets (a contribution across a document start is dropped) and cached prefill.
- eager fast paths: causal-conv1d (CUDA, K in 2..4) and, elsewhere, chunked autograd Functions that recompute the
  cheap tensors in backward (`canon_conv`, `norm_canon`, `canon_swiglu_recompute`).
- `choose_path`: the one place that decides which of these a call runs.
- `ShortConvolution` (the module: one forward, one decode `step`), then what the models call around it:
  `norm_then_canon` (sites A, C), `canon_call` and `canon_parts` (B, and the linear models' own short convs),
  `canon_swiglu` / `canon_glu` (D), `conv_state` (where every decode cache keeps a layer's last K-1 inputs,
  [B, K-1, C], in its `conv_states` dict) and `init_canon`.

The layer's norms and precision helpers (`rms_normalize`, `upcast`) come from `layers.py`, the file of the parts all
models share.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .layers import rms_normalize, upcast

try:
    from causal_conv1d import causal_conv1d_fn
except ImportError:
    causal_conv1d_fn = None

FAST_KERNEL_SIZES = (2, 3, 4)
PATHS = ("step", "context", "shifted", "causal_conv1d", "recompute", "plain")


def fold_residual(weight: torch.Tensor, residual: bool) -> torch.Tensor:
    """x + conv_w(x) == conv_w'(x) with w' = w plus 1 on the current-token tap: the residual costs no extra pass."""
    if not residual:
        return weight
    return torch.cat([weight[:, :-1], weight[:, -1:] + 1], dim=1)


# ----------------------------------------------------------------------------------------------------------------
# The definition (the tests' oracle)
# ----------------------------------------------------------------------------------------------------------------


def canon_reference(x, weight, bias=None, activation=False, residual=True, context=None):
    """A Canon layer by its definition: x [B, T, C], weight [C, K]; context [B, K-1, C] = the inputs before x
    (zeros when None). Computed in fp32 (fp64 stays fp64) with torch's grouped Conv1d, returned in x's dtype."""
    C, K = weight.shape
    if context is None:
        context = x.new_zeros(x.shape[0], K - 1, C)
    full = upcast(torch.cat([context.to(x.dtype), x], dim=1)).transpose(1, 2)
    y = F.conv1d(full, weight[:, None, :].to(full.dtype), None if bias is None else bias.to(full.dtype), groups=C)
    y = y.transpose(1, 2)
    if activation:
        y = F.silu(y)
    return (upcast(x) + y if residual else y).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# The shifted formulation: K multiply-adds, which inductor fuses with its neighbours
# ----------------------------------------------------------------------------------------------------------------


def _shift(x: torch.Tensor, s: int) -> torch.Tensor:
    """x [B, T, C] moved s positions along time (later for s > 0, earlier for s < 0), zero-filled: a padded view
    that inductor reads in place."""
    T = x.shape[1]
    if abs(s) >= T:
        return torch.zeros_like(x)
    if s >= 0:
        return F.pad(x[:, : T - s], (0, 0, s, 0))
    return F.pad(x[:, -s:], (0, 0, 0, -s))


def _shifted_forward(x, taps, keep):
    """y[:, t] = sum_s taps[K-1-s] * keep_s * x[:, t-s] in fp32, with taps [K, C] (fp32) and keep_s [B, T] the
    optional document masks (None: keep all)."""
    K = taps.shape[0]
    y = upcast(x) * taps[K - 1]
    for s in range(1, K):
        y = y + _masked(upcast(_shift(x, s)), keep, s) * taps[K - 1 - s]
    return y


def _shifted_backward(grad, x, taps, keep):
    """Gradients of `_shifted_forward` for the output gradient `grad`: (for x in x's dtype, for the taps). The taps'
    gradient pairs x with the gradient shifted earlier, which also serves the input's gradient."""
    K, grad32, x32 = taps.shape[0], upcast(grad), upcast(x)
    grad_x = grad32 * taps[K - 1]
    grad_taps = [None] * K
    grad_taps[K - 1] = _token_sum(grad32 * x32)
    for s in range(1, K):
        earlier = _shift(_masked(grad32, keep, s), -s)  # at t: the gradient of output t + s
        grad_x = grad_x + earlier * taps[K - 1 - s]
        grad_taps[K - 1 - s] = _token_sum(earlier * x32)
    return grad_x.to(x.dtype), torch.stack(grad_taps)


class _ShiftedConv(torch.autograd.Function):
    """`_shifted_forward` with its gradient written out by hand, so that only x and the taps are saved: left to
    autograd, the compiler saves a padded copy of x per tap for the taps' gradient (K-1 extra activations per Canon
    site, written in forward and read back in backward). The incoming gradient is read where it lies: under compile,
    inductor folds whatever produced it (RoPE's backward, a norm's) into these loops, which measured cheaper than
    writing it out once first (benchmarks/README.md)."""

    @staticmethod
    def forward(ctx, x, taps, keep):
        ctx.save_for_backward(x, taps, keep)
        return _shifted_forward(x, taps, keep).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, taps, keep = ctx.saved_tensors
        return *_shifted_backward(grad, x, taps, keep), None


class _ShiftedSwiGLU(torch.autograd.Function):
    """silu(g) * u with [g | u] = `_shifted_forward` of x [B, T, 2F]: Canon-D and SwiGLU in one function that saves
    only x and the taps, its backward recomputing [g | u] from x (K multiply-adds in the loop that needs them).
    Under compile, inductor emits the forward as one loop over x (the conv and SwiGLU together); its partitioner
    may still choose to keep g and u for backward."""

    @staticmethod
    def forward(ctx, x, taps, keep):
        ctx.save_for_backward(x, taps, keep)
        gate, up = _ShiftedSwiGLU.gate_up(x, taps, keep)
        return (F.silu(gate) * up).to(x.dtype)

    @staticmethod
    def gate_up(x, taps, keep):
        """The conv's two halves, each computed from its own half of x and the taps: under compile each is then
        used once and folded into the loop that consumes it, instead of the whole conv written out first."""
        half = x.shape[-1] // 2
        gate = _shifted_forward(x[..., :half], taps[:, :half], keep)
        return gate, _shifted_forward(x[..., half:], taps[:, half:], keep)

    @staticmethod
    def backward(ctx, grad):
        x, taps, keep = ctx.saved_tensors
        gate, up = _ShiftedSwiGLU.gate_up(x, taps, keep)
        # SiLU's derivative written out, one sigmoid serving both gradients: under compile this measured faster than
        # aten.silu_backward plus a silu (the model's generated kernels 1.92x vs 2.09x Llama's at dim 512)
        grad32, sigmoid = upcast(grad), torch.sigmoid(gate)
        grad_gate = grad32 * up * sigmoid * (1 + gate * (1 - sigmoid))
        grad_up = grad32 * gate * sigmoid
        return *_shifted_backward(torch.cat([grad_gate, grad_up], dim=-1), x, taps, keep), None


def _masked(x, keep, s):
    """x times the document mask of shift s (x itself without document resets)."""
    return x if keep is None else x * keep[s - 1][..., None]


def _token_sum(p: torch.Tensor, block: int = 16) -> torch.Tensor:
    """p [B, T, C] summed over batch and time, in two stages (within blocks of `block` positions, then over the
    blocks): inductor reduces each stage over rows that stay in cache, instead of streaming the whole tensor once per
    group of channels."""
    n = p.shape[0] * p.shape[1]
    if n % block:
        return p.sum((0, 1))
    return p.reshape(n // block, block, p.shape[2]).sum(1).sum(0)


def _shifted_taps(weight, residual):
    """weight [C, K] as fp32 taps [K, C] (each tap contiguous over channels, which keeps inductor's loops over the
    channels vectorised), plus 1 on the current token's tap when `residual`. Built by a cat, because inductor folds a
    transposing .contiguous() back into strided reads of the weight, and its loops then run scalar."""
    taps = upcast(weight).t()
    return torch.cat([taps[:-1], taps[-1:] + (1 if residual else 0)])


def _document_keep(doc_ids, x, K):
    """[K-1, B, T] in x's dtype: 1 where the input s positions back (s = 1..K-1) is in the same document, else 0.
    None without document ids."""
    if doc_ids is None or K == 1:
        return None
    padded_ids = F.pad(doc_ids, (K - 1, 0), value=-1)
    T = x.shape[1]
    return torch.stack([padded_ids[:, K - 1 - s : K - 1 - s + T] == doc_ids for s in range(1, K)]).to(x.dtype)


def shifted_conv(x, weight, context=None, doc_ids=None, residual=False):
    """y[:, t] = sum_s weight[:, K-1-s] * x[:, t-s] over shifts s < K (plus x when `residual`), accumulated in fp32,
    returned in x's dtype.

    context: optional [B, K-1, C] inputs before x (zeros otherwise). doc_ids: optional [B, T] document index of each
    position; a term whose input lies in an earlier document is dropped (the layer restarts at every document).
    Every op is elementwise on a shifted view of x, so inductor emits the whole conv (with whatever elementwise work
    surrounds it, forward and backward) inside the loops it already runs over the activations, instead of an opaque
    convolution call.
    """
    K, taps = weight.shape[-1], _shifted_taps(weight, residual)
    if context is not None:  # the conv of [context | x], of which the last T outputs are x's
        full = torch.cat([context.to(x.dtype), x], dim=1)
        return _ShiftedConv.apply(full, taps, None)[:, K - 1 :]
    return _ShiftedConv.apply(x, taps, _document_keep(doc_ids, x, K))


def shifted_swiglu(gate_up, weight, doc_ids=None, residual=False):
    """silu(gate) * up for [gate | up] = `shifted_conv(gate_up, weight, doc_ids=doc_ids, residual=residual)`, in one
    autograd function that recomputes the conv in backward (the compiled Canon-D)."""
    K = weight.shape[-1]
    return _ShiftedSwiGLU.apply(gate_up, _shifted_taps(weight, residual), _document_keep(doc_ids, gate_up, K))


# ----------------------------------------------------------------------------------------------------------------
# Eager fast paths: chunked along time (on CPU), recomputing in backward
# ----------------------------------------------------------------------------------------------------------------


def _correlate(x: torch.Tensor, weight: torch.Tensor, pad_left: int = 0, pad_right: int = 0) -> torch.Tensor:
    """Valid depthwise correlation along time: y[:, t] = sum_k weight[:, k] * xp[:, t + k], where xp is x [B, T, C]
    with zero rows added on either side (at most one side padded). [B, T, C] is a channels-last [B, C, 1, T] image,
    so this runs as one depthwise conv2d (oneDNN / cuDNN kernels): a single pass over the activations instead of K
    multiply-adds. The padding is the convolution's own (equal on both sides; the rows it adds on the other side
    are dropped), so x is not copied into a padded tensor first."""
    pad = max(pad_left, pad_right)
    n = x.shape[1] + pad_left + pad_right - weight.shape[-1] + 1
    image = x.transpose(1, 2).unsqueeze(2)
    y = F.conv2d(image, weight.to(x.dtype)[:, None, None, :], padding=(0, pad), groups=x.shape[2])
    return y.squeeze(2).transpose(1, 2)[:, pad - pad_left : pad - pad_left + n]


def _conv_forward(x: torch.Tensor, weight: torch.Tensor, left: int = 0) -> torch.Tensor:
    """y[:, t] = sum_k weight[:, k] * x[:, t - (K-1) + k] (zero before x starts), for the positions of x from
    `left` on (the first `left` positions are context). x [B, T, C], weight [C, K]."""
    return _correlate(x, weight, pad_left=weight.shape[-1] - 1 - left)


def _conv_backward(x, grad_y, weight, left, right):
    """Gradients of one chunk of `_conv_forward` outputs.

    The chunk owns positions [t0, t1), L = t1 - t0. x holds the conv inputs at [t0 - left, t1) and grad_y the output
    gradients at [t0, t1 + right) (left, right <= K-1; zero context beyond). Returns the input gradient at [t0, t1)
    (in x's dtype) and this chunk's share of the weight gradient (fp32 or fp64).
    """
    K, L = weight.shape[-1], x.shape[1] - left
    grad_x = _correlate(grad_y, weight.flip(-1), pad_right=K - 1 - right)
    grad_y32, x32 = upcast(grad_y), upcast(x)
    grad_w = torch.zeros_like(upcast(weight))
    for shift in range(K):
        first = max(0, shift - left)  # positions whose input `shift` earlier exists
        if first < L:
            product = grad_y32[:, first:L] * x32[:, first + left - shift : L + left - shift]
            grad_w[:, K - 1 - shift] = product.sum((0, 1))
    return grad_x, grad_w


def _chunks(x: torch.Tensor, K: int, rows: int):
    """(batch, t0, t1, left, right) for x [B, T, C]: blocks of about `rows` positions, each with up to K-1 positions of
    context on either side. A block is whole sequences (rows // T of them) when a sequence is at most `rows` long,
    else `rows` positions of one sequence: either way a contiguous block of rows, which the convolutions read
    without a copy."""
    B, T = x.shape[:2]
    if rows >= T:
        n = rows // T
        for b0 in range(0, B, n):
            yield slice(b0, min(B, b0 + n)), 0, T, 0, 0
        return
    for b in range(B):
        for t0 in range(0, T, rows):
            t1 = min(T, t0 + rows)
            yield slice(b, b + 1), t0, t1, min(t0, K - 1), min(T - t1, K - 1)


def _default_rows(x: torch.Tensor) -> int:
    """Block size (positions) so that one block of x [B, T, C] holds about 2^19 elements: a Canon layer's passes
    (normalisation, conv, activation and their gradients) then run in cache instead of streaming whole activations
    through memory (the best size measured on CPU; see the README). On GPUs one block: launches cost more there."""
    if x.is_cuda:
        return x.shape[0] * x.shape[1]
    return max(4, (1 << 19) // max(1, x.shape[2]))


class _CanonConv(torch.autograd.Function):
    """The plain causal depthwise conv; stores only its input."""

    @staticmethod
    def forward(ctx, x, weight, rows):
        ctx.save_for_backward(x, weight)
        ctx.rows = rows
        out = torch.empty_like(x)
        for b, t0, t1, left, _ in _chunks(x, weight.shape[-1], rows):
            out[b, t0:t1] = _conv_forward(x[b, t0 - left : t1], weight, left)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(upcast(weight))
        for b, t0, t1, left, right in _chunks(x, weight.shape[-1], ctx.rows):
            x_chunk, grad_chunk = x[b, t0 - left : t1], grad[b, t0 : t1 + right]
            grad_x[b, t0:t1], chunk_w = _conv_backward(x_chunk, grad_chunk, weight, left, right)
            grad_w += chunk_w
        return grad_x, grad_w.to(weight.dtype), None


def canon_conv(x: torch.Tensor, weight: torch.Tensor, rows=None) -> torch.Tensor:
    """Causal depthwise conv of x [B, T, C] with weight [C, K] and zero left context (plain PyTorch)."""
    return _CanonConv.apply(x, weight, rows or _default_rows(x))


class _NormCanon(torch.autograd.Function):
    """conv(n) (+ n) with n = RMSNorm(h), chunked; stores h and the per-token rstd only."""

    @staticmethod
    def forward(ctx, h, norm_weight, canon_weight, eps, residual, rows):
        weight = fold_residual(canon_weight, residual)
        out = torch.empty_like(h)
        rstd = h.new_empty(h.shape[:2] + (1,), dtype=upcast(h).dtype)
        for b, t0, t1, left, _ in _chunks(h, weight.shape[-1], rows):
            n, rstd_chunk = rms_normalize(h[b, t0 - left : t1], norm_weight, eps)
            rstd[b, t0:t1] = rstd_chunk[:, left:]
            out[b, t0:t1] = _conv_forward(n, weight, left)
        ctx.save_for_backward(h, rstd, norm_weight, canon_weight)
        ctx.residual, ctx.rows = residual, rows
        return out

    @staticmethod
    def backward(ctx, grad):
        h, rstd, norm_weight, canon_weight = ctx.saved_tensors
        weight = fold_residual(canon_weight, ctx.residual)
        grad_h = torch.empty_like(h)
        grad_nw = torch.zeros_like(upcast(norm_weight))
        grad_cw = torch.zeros_like(upcast(weight))
        for b, t0, t1, left, right in _chunks(h, weight.shape[-1], ctx.rows):
            normed = upcast(h[b, t0 - left : t1]) * rstd[b, t0 - left : t1]
            n = norm_weight * normed.to(h.dtype)
            grad_n, chunk_w = _conv_backward(n, grad[b, t0 : t1 + right], weight, left, right)
            grad_cw += chunk_w
            normed, grad_n = normed[:, left:], upcast(grad_n)
            # d/dh of h * rstd: rstd * (g - normed * mean(g * normed)), with g = grad_n * norm_weight; the products
            # grad_n * normed serve both the norm weight's gradient and (times norm_weight, one matrix-vector
            # product) that mean
            product = grad_n * normed
            grad_nw += product.sum((0, 1))
            mean = (product @ upcast(norm_weight)).unsqueeze(-1) / h.shape[-1]
            g = grad_n * norm_weight
            torch.mul(torch.addcmul(g, normed, mean, value=-1), rstd[b, t0:t1], out=grad_h[b, t0:t1])
        return grad_h, grad_nw.to(norm_weight.dtype), grad_cw.to(canon_weight.dtype), None, None, None


def norm_canon(h, norm_weight, canon_weight, eps, residual, rows=None):
    """RMSNorm then a Canon layer (no activation, no bias), recomputing the normalised tensor in backward."""
    return _NormCanon.apply(h, norm_weight, canon_weight, eps, residual, rows or _default_rows(h))


class _CanonSwiGLU(torch.autograd.Function):
    """silu(g) * u with [g | u] = conv([gate | up]) (+ [gate | up]): Canon-D then SwiGLU, chunked; stores
    [gate | up] only and recomputes the conv in backward."""

    @staticmethod
    def forward(ctx, gate_up, weight, residual, rows):
        ctx.save_for_backward(gate_up, weight)
        ctx.residual, ctx.rows = residual, rows
        folded = fold_residual(weight, residual)
        B, T, C2 = gate_up.shape
        out = gate_up.new_empty(B, T, C2 // 2)
        for b, t0, t1, left, _ in _chunks(gate_up, folded.shape[-1], rows):
            g, u = _conv_forward(gate_up[b, t0 - left : t1], folded, left).chunk(2, dim=-1)
            torch.mul(F.silu(g), u, out=out[b, t0:t1])
        return out

    @staticmethod
    def backward(ctx, grad):
        gate_up, weight = ctx.saved_tensors
        folded = fold_residual(weight, ctx.residual)
        grad = grad.contiguous()
        grad_in = torch.empty_like(gate_up)
        grad_w = torch.zeros_like(upcast(folded))
        for b, t0, t1, left, right in _chunks(gate_up, folded.shape[-1], ctx.rows):
            x = gate_up[b, t0 - left : t1 + right]  # inputs of the conv outputs at [t0, t1 + right)
            gu = _conv_forward(x, folded, left)
            g, u = gu.chunk(2, dim=-1)
            g_out = grad[b, t0 : t1 + right]
            grad_gu = torch.empty_like(gu)
            grad_g, grad_u = grad_gu.chunk(2, dim=-1)
            torch.ops.aten.silu_backward.grad_input(g_out * u, g, grad_input=grad_g)
            torch.mul(g_out, F.silu(g), out=grad_u)
            x_chunk = x[:, : x.shape[1] - right]
            grad_in[b, t0:t1], chunk_w = _conv_backward(x_chunk, grad_gu, folded, left, right)
            grad_w += chunk_w
        return grad_in, grad_w.to(weight.dtype), None, None


def canon_swiglu_recompute(gate_up, weight, residual, rows=None):
    """Canon-D on [gate | up] ([B, T, 2F], weight [2F, K]) followed by silu(gate) * up, recomputing in backward."""
    return _CanonSwiGLU.apply(gate_up, weight, residual, rows or _default_rows(gate_up))


# ----------------------------------------------------------------------------------------------------------------
# Which path a call takes
# ----------------------------------------------------------------------------------------------------------------


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def choose_path(conv, x, mask=None, state=None, doc_ids=None) -> str:
    """How `conv` runs on x [B, T, C] (one of PATHS); decided here only.

    - "step" / "context": decoding with a conv state (one token / several).
    - "shifted" under torch.compile and for document resets: the elementwise formulation, which inductor fuses
      with the norm, residual and SwiGLU around it (the opaque kernels below cost extra passes there).
    - "causal_conv1d" for CUDA tensors when the package is installed and K is 2..4: faster in eager GPU training
      than the recomputing Functions, at more activation memory (figures in the README).
    - "recompute": the chunked Functions that fuse a pure Canon layer (`is_pure_conv`: no bias, no activation) with
      its neighbours and keep only their inputs; eager training without padding.
    - "plain": the chunked convolution alone (padding masks, bias or activation).
    """
    if state is not None:
        return "step" if x.shape[1] == 1 else "context"
    if doc_ids is not None or _compiling():
        return "shifted"
    if conv.uses_fast_path(x):
        return "causal_conv1d"
    if mask is None and conv.is_pure_conv:
        return "recompute"
    return "plain"


# ----------------------------------------------------------------------------------------------------------------
# The module
# ----------------------------------------------------------------------------------------------------------------


class ShortConvolution(nn.Conv1d):
    """A Canon layer: depthwise causal conv over time (weight [C, 1, K]) with optional bias, SiLU and residual.

    PyTorch's default Conv1d initialisation (uniform in +-1/sqrt(K), std 1/sqrt(3K)) is the intended one; the
    optional bias starts at zero so that a fresh Canon layer keeps its residual behaviour.
    """

    def __init__(
        self, hidden_size, kernel_size=4, bias=False, activation=False, residual=True, device=None, dtype=None
    ):
        if kernel_size < 1:
            raise ValueError(f"canon kernel_size={kernel_size}; expected an integer >= 1")
        super().__init__(
            hidden_size,
            hidden_size,
            kernel_size,
            groups=hidden_size,
            padding=kernel_size - 1,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.hidden_size = hidden_size
        self.activation = bool(activation)
        self.residual = bool(residual)

    def reset_parameters(self):
        init_canon(self)

    def extra_repr(self):
        return (
            f"hidden_size={self.hidden_size}, kernel_size={self.kernel_size[0]}, bias={self.bias is not None}, "
            f"activation={self.activation}, residual={self.residual}"
        )

    @property
    def kernel(self) -> int:
        return self.kernel_size[0]

    @property
    def is_pure_conv(self) -> bool:
        """No bias and no activation: the layer is its taps alone (plus the residual), which is what the recomputing
        training Functions compute."""
        return self.bias is None and not self.activation

    def uses_fast_path(self, x: torch.Tensor) -> bool:
        return causal_conv1d_fn is not None and x.is_cuda and self.kernel in FAST_KERNEL_SIZES

    def forward(self, x, attention_mask=None, conv_state=None, doc_ids=None, path=None):
        """Apply the Canon layer to x [B, T, C].

        attention_mask: optional [B, T] (1 = token, 0 = padding); padding positions are zeroed before the conv
            (out of place), so they never leak into later tokens.
        conv_state: optional [B, K-1, C] tensor with the previous K-1 inputs (oldest first). It serves as left
            context and is replaced by the last K-1 inputs of this call (updated in place).
        doc_ids: optional [B, T] document index per position: the layer restarts (zero context) at each new one.
        path: one of PATHS to force a formulation (tests); default `choose_path`'s.
        Returns the output [B, T, C].
        """
        return self.channels(x, self.weight[:, 0, :], self.bias, attention_mask, conv_state, doc_ids, path)

    def channels(self, x, weight, bias, attention_mask=None, conv_state=None, doc_ids=None, path=None):
        """`forward` on a group of the layer's channels: x [B, T, C'] with their taps weight [C', K] and bias [C']
        (or None). `forward` is the group of all channels; `canon_parts` runs q, k and v as three groups."""
        if attention_mask is not None:
            x = torch.where(attention_mask[..., None].bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
        path = path or choose_path(self, x, attention_mask, conv_state, doc_ids)
        if path == "step":
            return self.step(x, conv_state)
        folded = self.residual and not self.activation
        if path == "context":
            y = shifted_conv(x, weight, context=conv_state, residual=folded)
            keep = torch.cat([conv_state.to(x.dtype), x], dim=1)[:, x.shape[1] :]
            conv_state.copy_(keep)
        elif path == "shifted":
            y = shifted_conv(x, weight, doc_ids=doc_ids, residual=folded)
        elif path == "causal_conv1d":
            y = causal_conv1d_fn(x.transpose(1, 2), fold_residual(weight, folded), None, None).transpose(1, 2)
        elif path in ("recompute", "plain"):
            y = canon_conv(x, fold_residual(weight, folded))
        else:
            raise ValueError(f"path={path!r}; expected one of {PATHS}")
        return self.finish(x, y, bias)

    def finish(self, x, y, bias):
        """Bias, SiLU and (unless folded into the taps, as when there is no activation) the residual, on conv(x)."""
        if bias is not None:
            y = y + bias
        if self.activation:
            return x + F.silu(y) if self.residual else F.silu(y)
        return y

    def step_taps(self) -> torch.Tensor:
        """The taps as a contiguous [K, C] tensor, at least fp32 (a strided view of the weight makes each decoding
        multiply about twice as slow), with the residual folded in when there is no activation (as `channels`
        does). Kept between steps while the weight is unchanged: in-place updates move its version counter, and a new
        tensor (load, .to()) its address. Rebuilt every call when gradients flow to it."""
        weight, folded = self.weight, self.residual and not self.activation
        if torch.is_grad_enabled() and weight.requires_grad:
            return upcast(fold_residual(weight[:, 0, :], folded).T)
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if self.__dict__.get("_step_taps_key") != key:
            self.__dict__["_step_taps"] = upcast(fold_residual(weight.detach()[:, 0, :], folded).T).contiguous()
            self.__dict__["_step_taps_key"] = key
        return self.__dict__["_step_taps"]

    def step(self, x, conv_state):
        """One decoding step: x [B, 1, C] after the K-1 inputs in conv_state, which shifts by one in place. A handful
        of ops, because decoding is bound by per-op overhead: on GPU this beat causal_conv1d_update (see the README),
        and it is exact."""
        window = torch.cat([conv_state, x], dim=1)  # [B, K, C], oldest first
        conv_state.copy_(window[:, 1:])
        taps, bias = self.step_taps(), self.bias
        if window.dtype == taps.dtype:
            y = (window * taps).sum(1, keepdim=True)
        else:  # half precision: the sum in fp32
            y = (window.float() * taps).sum(1, keepdim=True).to(x.dtype)
        return self.finish(x, y, bias)


def create_canon(channels: int, config) -> ShortConvolution:
    """Build a Canon layer of width `channels` from the canon_* fields of a config (HF config or Lingua args)."""
    if causal_conv1d_fn is None and config.canon_kernel in FAST_KERNEL_SIZES and torch.cuda.is_available():
        warnings.warn(
            "causal-conv1d is not installed: eager Canon layers use the plain PyTorch path on CUDA (slower).",
            ImportWarning,
            stacklevel=2,
        )
    return ShortConvolution(
        channels,
        kernel_size=config.canon_kernel,
        bias=config.canon_bias,
        activation=config.canon_activation,
        residual=config.canon_residual,
    )


def init_canon(module: ShortConvolution, fns=nn.init) -> None:
    """PyTorch's default conv init, U(+-1/sqrt(K)), is what Canon layers are designed for (never the models' 0.02);
    the bias starts at zero. `fns`: the init functions to use (transformers 5 passes its own, which skip loaded
    parameters)."""
    fns.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        fns.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------------------------
# What the models call: the sites with their neighbours, and the decode states
# ----------------------------------------------------------------------------------------------------------------


def conv_state(cache, key, conv: ShortConvolution, like: torch.Tensor):
    """The conv state of `conv` under `key` in `cache` (any object with a `conv_states` dict), for inputs like `like`
    [B, T, C]: the last K-1 inputs [B, K-1, C], zeros (no history) on first use, which the layer then advances in
    place. None without a cache (training)."""
    if cache is None:
        return None
    state = cache.conv_states.get(key)
    if state is None:
        state = cache.conv_states[key] = like.new_zeros(like.shape[0], conv.kernel - 1, conv.hidden_size)
    return state


def canon_call(conv, x, cache=None, key=None, mask=None, doc_ids=None):
    """conv(x), continuing from and advancing the state `key` of `cache` (anything with a `conv_states` dict); x
    itself when there is no conv (the site is off)."""
    if conv is None:
        return x
    return conv(x, attention_mask=mask, conv_state=conv_state(cache, key, conv, x), doc_ids=doc_ids)


def norm_then_canon(h, norm_weight, eps, canon=None, cache=None, key=None, mask=None, doc_ids=None):
    """RMSNorm(h), then the Canon layer `canon` (sites A and C) when there is one."""
    if canon is None:
        return rms_normalize(h, norm_weight, eps)[0]
    state = conv_state(cache, key, canon, h)
    path = choose_path(canon, h, mask, state, doc_ids)
    if path == "recompute":
        return norm_canon(h, norm_weight, canon.weight[:, 0, :], eps, canon.residual)
    n = rms_normalize(h, norm_weight, eps)[0]
    return canon(n, attention_mask=mask, conv_state=state, doc_ids=doc_ids, path=path)


def canon_parts(conv, parts, cache=None, key=None, mask=None, doc_ids=None, norms=None):
    """conv applied to the channel concatenation of `parts` ([B, T, C_i] each), returned as the same parts (Canon-B
    on q, k, v). `norms`: optional RMSNorm modules (or None) per part, applied to their part before the conv (the
    QK-norm before Canon-B). In training each part runs alone with its slice of the taps, so the concatenation is
    never written out, and the recomputing path fuses a part's norm with its conv (as `norm_then_canon` does); with a
    decode state (one state for all channels) or causal-conv1d (one launch) the parts are concatenated. Without a
    conv (the site is off) the parts, normalised."""
    norms = norms or [None] * len(parts)
    if conv is None:
        return [_normalize(x, norm) for x, norm in zip(parts, norms, strict=True)]
    state = conv_state(cache, key, conv, parts[0])
    path = choose_path(conv, parts[0], mask, state, doc_ids)
    widths = [p.shape[-1] for p in parts]
    if path in ("step", "context", "causal_conv1d"):
        whole = torch.cat([_normalize(x, norm) for x, norm in zip(parts, norms, strict=True)], dim=-1)
        return conv(whole, attention_mask=mask, conv_state=state, doc_ids=doc_ids, path=path).split(widths, dim=-1)
    weights = conv.weight[:, 0, :].split(widths)
    biases = [None] * len(parts) if conv.bias is None else conv.bias.split(widths)
    out = []
    for x, weight, bias, norm in zip(parts, weights, biases, norms, strict=True):
        if norm is not None and path == "recompute":
            out.append(norm_canon(x, norm.weight, weight, norm.eps, conv.residual))
        else:
            out.append(conv.channels(_normalize(x, norm), weight, bias, mask, doc_ids=doc_ids, path=path))
    return out


def _normalize(x, norm):
    return x if norm is None else norm(x)


def canon_swiglu(gate_up, canon=None, cache=None, key=None, mask=None, doc_ids=None):
    """SiLU(gate) * up for gate_up = [gate | up] [B, T, 2F], after Canon-D when there is one."""
    if canon is not None:
        state = conv_state(cache, key, canon, gate_up)
        path = choose_path(canon, gate_up, mask, state, doc_ids)
        if path == "recompute":
            return canon_swiglu_recompute(gate_up, canon.weight[:, 0, :], canon.residual)
        if path == "shifted" and canon.is_pure_conv:
            return shifted_swiglu(gate_up, canon.weight[:, 0, :], doc_ids, canon.residual)
        gate_up = canon(gate_up, attention_mask=mask, conv_state=state, doc_ids=doc_ids, path=path)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def canon_glu(gate_up, activation=None, canon=None, cache=None, key=None, mask=None):
    """activation(gate) * up for gate_up = [gate | up] [B, T, 2F], after Canon-D when there is one. SiLU when
    `activation` is None, the case `canon_swiglu` fuses with the Canon layer."""
    if activation is None:
        return canon_swiglu(gate_up, canon, cache, key, mask)
    gate, up = canon_call(canon, gate_up, cache, key, mask).chunk(2, dim=-1)
    return activation(gate) * up


def map_states(states: dict, fn) -> dict:
    """`states` with fn applied to every tensor (beam reordering, batch repetition and selection)."""
    return {key: fn(state) for key, state in states.items()}
