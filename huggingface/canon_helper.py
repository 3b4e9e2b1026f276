"""Canon layers: residual depthwise causal convolutions along the time axis, and the cache that carries them.

A Canon layer maps x[B, T, C] to x + conv(x), where conv is a per-channel causal convolution of kernel K whose last
tap multiplies the current token (PyTorch's cross-correlation orientation, weight shape [C, 1, K]).

Three ways to run it, all computing the same numbers:
- `canon_conv` (plain PyTorch, any kernel size, any device): an autograd Function that saves only its input;
- causal-conv1d kernels when the package is installed, the tensor is on CUDA and K is 2, 3 or 4;
- `norm_canon` / `canon_swiglu`: training-time fusions of RMSNorm -> Canon and Canon -> SwiGLU that recompute the
  cheap intermediate tensors in backward instead of storing them (used when there is no cache and no activation).
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .transformers_compat import DynamicCache

try:
    from causal_conv1d import causal_conv1d_fn
except ImportError:
    causal_conv1d_fn = None

FAST_KERNEL_SIZES = (2, 3, 4)


# ----------------------------------------------------------------------------------------------------------------
# Plain PyTorch causal depthwise convolution on [B, T, C] activations, chunked along time on CPU.
# ----------------------------------------------------------------------------------------------------------------


def upcast(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (fp64 stays fp64): half-precision inputs accumulate in fp32."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def fold_residual(weight: torch.Tensor, residual: bool) -> torch.Tensor:
    """x + conv_w(x) == conv_w'(x) with w' = w plus 1 on the current-token tap: the residual costs no extra pass."""
    if not residual:
        return weight
    return torch.cat([weight[:, :-1], weight[:, -1:] + 1], dim=1)


def _correlate(x: torch.Tensor, weight: torch.Tensor, pad_left: int = 0, pad_right: int = 0) -> torch.Tensor:
    """Valid depthwise correlation along time: y[:, t] = sum_k weight[:, k] * xp[:, t + k], where xp is x [B, T, C]
    with zero rows added on either side. [B, T, C] is a channels-last [B, C, 1, T] image, so this runs as one
    depthwise conv2d (oneDNN / cuDNN kernels): a single pass, 3-4x faster on CPU than K multiply-adds."""
    if pad_left or pad_right:
        x = F.pad(x, (0, 0, pad_left, pad_right))
    y = F.conv2d(x.contiguous().transpose(1, 2).unsqueeze(2), weight.to(x.dtype)[:, None, None, :], groups=x.shape[2])
    return y.squeeze(2).transpose(1, 2)


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


def _time_chunks(T: int, K: int, rows: int):
    """(t0, t1, left, right): chunks of `rows` positions with up to K-1 positions of context on each side."""
    for t0 in range(0, T, rows):
        t1 = min(T, t0 + rows)
        yield t0, t1, min(t0, K - 1), min(T - t1, K - 1)


def _default_rows(x: torch.Tensor) -> int:
    """Chunk length along time so that one chunk of x [B, T, C] holds about 2^19 elements: a Canon layer's passes
    (normalisation, conv, activation and their gradients) then run in cache instead of streaming whole activations
    through memory (measured best among 2^15..2^20 elements on CPU). On GPUs one chunk: launches cost more there."""
    if x.is_cuda:
        return x.shape[1]
    return max(4, (1 << 19) // max(1, x.shape[0] * x.shape[2]))


class _CanonConv(torch.autograd.Function):
    """The plain causal depthwise conv; stores only its input."""

    @staticmethod
    def forward(ctx, x, weight, rows):
        ctx.save_for_backward(x, weight)
        ctx.rows = rows
        out = torch.empty_like(x)
        for t0, t1, left, _ in _time_chunks(x.shape[1], weight.shape[-1], rows):
            out[:, t0:t1] = _conv_forward(x[:, t0 - left : t1], weight, left)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(upcast(weight))
        for t0, t1, left, right in _time_chunks(x.shape[1], weight.shape[-1], ctx.rows):
            x_chunk, grad_chunk = x[:, t0 - left : t1], grad[:, t0 : t1 + right]
            grad_x[:, t0:t1], chunk_w = _conv_backward(x_chunk, grad_chunk, weight, left, right)
            grad_w += chunk_w
        return grad_x, grad_w.to(weight.dtype), None


def canon_conv(x: torch.Tensor, weight: torch.Tensor, rows=None) -> torch.Tensor:
    """Causal depthwise conv of x [B, T, C] with weight [C, K] and zero left context (plain PyTorch)."""
    return _CanonConv.apply(x, weight, rows or _default_rows(x))


def rms_normalize(h, norm_weight, eps):
    """(norm_weight * h / rms(h), rstd) as LlamaRMSNorm computes it (statistics in fp32)."""
    h32 = upcast(h)
    rstd = torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)
    return norm_weight * (h32 * rstd).to(h.dtype), rstd


class _NormCanon(torch.autograd.Function):
    """conv(n) (+ n) with n = RMSNorm(h), chunked; stores h and the per-token rstd only."""

    @staticmethod
    def forward(ctx, h, norm_weight, canon_weight, eps, residual, rows):
        weight = fold_residual(canon_weight, residual)
        out = torch.empty_like(h)
        rstd = h.new_empty(h.shape[:2] + (1,), dtype=upcast(h).dtype)
        for t0, t1, left, _ in _time_chunks(h.shape[1], weight.shape[-1], rows):
            n, rstd_chunk = rms_normalize(h[:, t0 - left : t1], norm_weight, eps)
            rstd[:, t0:t1] = rstd_chunk[:, left:]
            out[:, t0:t1] = _conv_forward(n, weight, left)
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
        for t0, t1, left, right in _time_chunks(h.shape[1], weight.shape[-1], ctx.rows):
            normed = upcast(h[:, t0 - left : t1]) * rstd[:, t0 - left : t1]
            n = norm_weight * normed.to(h.dtype)
            grad_n, chunk_w = _conv_backward(n, grad[:, t0 : t1 + right], weight, left, right)
            grad_cw += chunk_w
            normed, grad_n = normed[:, left:], upcast(grad_n)
            # d/dh of h * rstd: rstd * (g - normed * mean(g * normed)), with g = grad_n * norm_weight; the products
            # grad_n * normed serve both the norm weight's gradient and (times norm_weight, one matrix-vector
            # product) that mean
            product = grad_n * normed
            grad_nw += product.sum((0, 1))
            mean = (product @ upcast(norm_weight)).unsqueeze(-1) / h.shape[-1]
            g = grad_n * norm_weight
            torch.mul(torch.addcmul(g, normed, mean, value=-1), rstd[:, t0:t1], out=grad_h[:, t0:t1])
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
        for t0, t1, left, _ in _time_chunks(T, folded.shape[-1], rows):
            g, u = _conv_forward(gate_up[:, t0 - left : t1], folded, left).chunk(2, dim=-1)
            torch.mul(F.silu(g), u, out=out[:, t0:t1])
        return out

    @staticmethod
    def backward(ctx, grad):
        gate_up, weight = ctx.saved_tensors
        folded = fold_residual(weight, ctx.residual)
        grad = grad.contiguous()
        grad_in = torch.empty_like(gate_up)
        grad_w = torch.zeros_like(upcast(folded))
        for t0, t1, left, right in _time_chunks(gate_up.shape[1], folded.shape[-1], ctx.rows):
            x = gate_up[:, t0 - left : t1 + right]  # inputs of the conv outputs at [t0, t1 + right)
            gu = _conv_forward(x, folded, left)
            g, u = gu.chunk(2, dim=-1)
            g_out = grad[:, t0 : t1 + right]
            grad_gu = torch.empty_like(gu)
            grad_g, grad_u = grad_gu.chunk(2, dim=-1)
            torch.ops.aten.silu_backward.grad_input(g_out * u, g, grad_input=grad_g)
            torch.mul(g_out, F.silu(g), out=grad_u)
            x_chunk = x[:, : x.shape[1] - right]
            grad_in[:, t0:t1], chunk_w = _conv_backward(x_chunk, grad_gu, folded, left, right)
            grad_w += chunk_w
        return grad_in, grad_w.to(weight.dtype), None, None


def canon_swiglu(gate_up, weight, residual, rows=None):
    """Canon-D on [gate | up] ([B, T, 2F], weight [2F, K]) followed by silu(gate) * up, recomputing in backward."""
    return _CanonSwiGLU.apply(gate_up, weight, residual, rows or _default_rows(gate_up))


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
        super().reset_parameters()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self):
        return (
            f"hidden_size={self.hidden_size}, kernel_size={self.kernel_size[0]}, bias={self.bias is not None}, "
            f"activation={self.activation}, residual={self.residual}"
        )

    @property
    def kernel(self) -> int:
        return self.kernel_size[0]

    @property
    def fusable(self) -> bool:
        """Whether the recomputing training fusions (no bias, no activation) apply."""
        return self.bias is None and not self.activation

    def uses_fast_path(self, x: torch.Tensor) -> bool:
        return causal_conv1d_fn is not None and x.is_cuda and self.kernel in FAST_KERNEL_SIZES

    def forward(self, x, attention_mask=None, conv_state=None, use_fast_path=None):
        """Apply the Canon layer to x [B, T, C].

        attention_mask: optional [B, T] (1 = token, 0 = padding); padding positions are zeroed before the conv
            (out of place), so they never leak into later tokens.
        conv_state: optional [B, K-1, C] tensor with the previous K-1 inputs (oldest first). It serves as left
            context and is replaced by the last K-1 inputs of this call (updated in place).
        use_fast_path: force (True) or forbid (False) the causal-conv1d kernels; default: when available.
        Returns the output [B, T, C].
        """
        if attention_mask is not None:
            x = torch.where(attention_mask[..., None].bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
        if conv_state is not None and x.shape[1] == 1:
            y = self._step(x, conv_state)
            return x + y if self.residual else y
        fast = self.uses_fast_path(x) if use_fast_path is None else use_fast_path
        folded = self.residual and not self.activation
        weight = fold_residual(self.weight[:, 0, :], folded)
        if conv_state is None:
            y = (
                causal_conv1d_fn(x.transpose(1, 2), weight, None, None).transpose(1, 2)
                if fast
                else canon_conv(x, weight)
            )
        else:
            context = torch.cat([conv_state.to(x.dtype), x], dim=1)
            y = canon_conv(context, weight)[:, self.kernel - 1 :]
            conv_state.copy_(context[:, context.shape[1] - (self.kernel - 1) :])
        if self.bias is not None:
            y = y + self.bias
        if self.activation:
            y = F.silu(y)
        return x + y if self.residual and not folded else y

    def _step(self, x, conv_state):
        """One decoding step (bias and activation included, residual not): the conv over the K-1 stored inputs
        and x [B, 1, C]; the state shifts by one, in place. A handful of ops, because decoding is bound by per-op
        overhead: on an H100 this beat causal_conv1d_update (0.61x vs 0.53x Llama's tokens/s) and it is exact."""
        window = torch.cat([conv_state, x], dim=1)  # [B, K, C], oldest first
        conv_state.copy_(window[:, 1:])
        y = (upcast(window) * upcast(self.weight[:, 0, :]).T).sum(1, keepdim=True).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return F.silu(y) if self.activation else y


def create_canon(channels: int, config) -> ShortConvolution:
    """Build a Canon layer of width `channels` from the canon_* fields of a config."""
    if causal_conv1d_fn is None and config.canon_kernel in FAST_KERNEL_SIZES and torch.cuda.is_available():
        warnings.warn(
            "causal-conv1d is not installed: Canon layers use the plain PyTorch path on CUDA (slower).",
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


# ----------------------------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------------------------


class CanonCache(DynamicCache):
    """A DynamicCache that also owns the Canon conv states, one [B, K-1, C] tensor per (layer, site).

    Beam search reordering, batch repetition and selection act on the conv states together with keys and values,
    so every `generate()` mode sees consistent states. Cropping is refused while conv states exist: the last K-1
    inputs before an arbitrary earlier position are not kept.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.canon_states: dict[tuple[int, str], torch.Tensor] = {}

    def canon_state(self, layer_idx: int, site: str, canon: ShortConvolution, like: torch.Tensor):
        """The conv state of (layer_idx, site) for inputs like `like` [B, T, C], created as zeros (no left
        context) on first use."""
        key = (layer_idx, site)
        state = self.canon_states.get(key)
        if state is None:
            state = like.new_zeros(like.shape[0], canon.kernel - 1, canon.hidden_size)
            self.canon_states[key] = state
        return state

    def _map_states(self, fn):
        self.canon_states = {key: fn(state) for key, state in self.canon_states.items()}

    def reorder_cache(self, beam_idx: torch.LongTensor):
        super().reorder_cache(beam_idx)
        self._map_states(lambda s: s.index_select(0, beam_idx.to(s.device)))

    def batch_repeat_interleave(self, repeats: int):
        super().batch_repeat_interleave(repeats)
        self._map_states(lambda s: s.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor):
        super().batch_select_indices(indices)
        self._map_states(lambda s: s[indices])

    def reset(self):
        if hasattr(super(), "reset"):  # not on every transformers release's DynamicCache
            super().reset()
        self._map_states(torch.zeros_like)

    @property
    def is_croppable(self) -> bool:
        return not self.canon_states and getattr(super(), "is_croppable", True)

    def crop(self, *args, **kwargs):
        if self.canon_states:
            raise NotImplementedError(
                "CanonCache cannot be cropped once Canon conv states exist (assisted/speculative decoding is not "
                "supported); re-run the prefix instead"
            )
        super().crop(*args, **kwargs)
