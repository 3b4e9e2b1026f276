"""Transformer parts of the Lingua trainer: Llama blocks with Canon layers (sites A/B/C/D), QK-norm, partial RoPE.

Read top to bottom: arguments and derived sizes, the loss, RMSNorm and RoPE, Canon application (with optional
document resets), attention, feed-forward, the block, and the base model. `apps/main/transformer.py` adds the
embedding, final norm and output head (`LMTransformer`). Generation passes an `InferenceCache` (keys/values and Canon
conv states, `lingua/generation_cache.py`); without one every module runs its training path unchanged.

Parameter names and state-dict order are those of the published LlamaCanon checkpoints, which
`huggingface.LlamaCanonForCausalLM` loads through `load_from_lingua_state`. The Canon layer is `lingua/canon.py` and
RMSNorm, the causal mask and the MLP width are `lingua/layers.py`: links to the Hugging Face package's flat, torch-only
files (this library imports no transformers), so both sides run one implementation: the causal-conv1d and recomputing
eager paths, and under torch.compile the shifted formulation that inductor fuses with the RMSNorm, residual and
SwiGLU around each Canon site. q, k and v (gate and up) keep their own weights, as in the checkpoints, and run as one
GEMM on the concatenated weights in training (`joint_projection`).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lingua.canon import ShortConvolution, canon_parts, canon_swiglu, create_canon, norm_then_canon
from lingua.layers import RMSNorm, causal_mask, joint_projection, mlp_width, upcast

CANON_SITES = "ABCD"
INIT_STD_FACTORS = ("disabled", "global_depth", "current_depth", "dim_ratio")
Z_LOSS_WEIGHT = 1e-4


@dataclass
class BaseTransformerArgs:
    canon_set: str = ""  # letters of the enabled Canon sites, e.g. "ABCD" or "AC"
    canon_bias: bool = False
    canon_activation: bool = False  # SiLU after the conv
    canon_kernel: int = 4
    canon_residual: bool = True
    qk_norm: bool = False  # RMSNorm over the full q (H*hd) and k (KV*hd) projections
    dim: int = 512
    n_layers: int = 8
    head_dim: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    hidden_dim: int | None = None  # explicit MLP width; overrides the formula below
    ffn_dim_multiplier: float | None = None
    multiple_of: int = 256
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_dim: int | None = None  # rotate only the first rope_dim coordinates of each head (None: all)
    init_base_std: float | None = None
    init_std_factor: str = "disabled"  # disabled | global_depth | current_depth | dim_ratio
    max_seqlen: int = 1024


def attention_shape(args: BaseTransformerArgs) -> tuple[int, int, int]:
    """(n_heads, n_kv_heads, head_dim); either n_heads or head_dim may be given, the other is derived from dim."""
    if args.n_heads is None and args.head_dim is None:
        raise ValueError(f"model needs n_heads or head_dim (dim={args.dim}); got neither")
    head_dim = args.head_dim or args.dim // args.n_heads
    n_heads = args.n_heads or args.dim // head_dim
    return n_heads, args.n_kv_heads or n_heads, head_dim


def ffn_hidden_dim(args: BaseTransformerArgs) -> int:
    """The MLP width F: `hidden_dim` if set, else 2/3 of 4*dim, times ffn_dim_multiplier, rounded up to multiple_of."""
    return mlp_width(args.dim, args.hidden_dim, multiplier=args.ffn_dim_multiplier, multiple_of=args.multiple_of)


def rotary_dim(args: BaseTransformerArgs) -> int:
    return args.rope_dim or attention_shape(args)[2]


def check_args(args: BaseTransformerArgs) -> None:
    """Raise one clear error for the first inconsistent model field."""
    unknown = sorted(set(args.canon_set) - set(CANON_SITES))
    if unknown:
        raise ValueError(f"canon_set={args.canon_set!r} contains {''.join(unknown)!r}; expected letters of A, B, C, D")
    if args.canon_kernel < 1:
        raise ValueError(f"canon_kernel={args.canon_kernel}; expected an integer >= 1")
    n_heads, n_kv_heads, head_dim = attention_shape(args)
    if n_heads * head_dim != args.dim and args.head_dim is None:
        raise ValueError(f"dim={args.dim} is not divisible by n_heads={n_heads}; set head_dim explicitly")
    if n_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
    R = args.rope_dim
    if R is not None and (R <= 0 or R % 2 or R > head_dim):
        raise ValueError(f"rope_dim={R}; expected an even integer in [2, head_dim={head_dim}] or None")
    if args.init_std_factor not in INIT_STD_FACTORS:
        raise ValueError(f"init_std_factor={args.init_std_factor!r}; expected one of {INIT_STD_FACTORS}")


def init_std_factor(mode: str, depth: int, n_layers: int, dim: int) -> float:
    """Divisor of the output-projection init std of the layer at 0-based `depth`.

    global_depth uses sqrt(2 * (n_layers + 1)), as the published runs were trained (not sqrt(2 * n_layers)).
    """
    return {
        "disabled": 1.0,
        "current_depth": math.sqrt(2 * (depth + 1)),
        "global_depth": math.sqrt(2 * (n_layers + 1)),
        "dim_ratio": dim / 4096,
    }[mode]


def trunc_normal_(weight: torch.Tensor, std: float) -> None:
    """Normal(0, std) truncated at +-3 std (the bounds follow the std actually used)."""
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-3 * std, b=3 * std)


# ----------------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------------


def cross_entropy(logits, target, loss_mask=None, z_loss=False, z_loss_logz=False):
    """Mean token cross-entropy of logits [..., V] against target [...], computed in fp32.

    loss_mask: optional, same shape as target; positions where it is 0 contribute nothing, and the mean is over the
        remaining positions (0 when none remain).
    z_loss: the recipes' "z-loss", kept under its name so recipes train as published: every token's NLL l
        becomes l + 1e-4 * l**2 (a squared-NLL penalty, *not* the log-partition z-loss).
    z_loss_logz: the standard (PaLM) z-loss: + 1e-4 * logsumexp(logits)**2 per token, pulling log Z towards 0.
    Both options may be combined; each adds its own term.
    """
    logits = logits.flatten(0, -2).float()
    target = target.flatten()
    log_z = torch.logsumexp(logits, dim=-1)
    nll = log_z - logits.gather(1, target[:, None]).squeeze(1)
    per_token = nll
    if z_loss:
        per_token = per_token + Z_LOSS_WEIGHT * nll.square()
    if z_loss_logz:
        per_token = per_token + Z_LOSS_WEIGHT * log_z.square()
    if loss_mask is None:
        return per_token.mean()
    weights = loss_mask.flatten().to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp(min=1)


# ----------------------------------------------------------------------------------------------------------------
# Rotary embeddings (RMSNorm is layers.py's, shared with the Hugging Face models)
# ----------------------------------------------------------------------------------------------------------------


class RotaryEmbedding(nn.Module):
    """cos/sin of the angles pos * theta^(-2j/R), j < R/2, in fp32.

    Computed per call from the positions (a few thousand multiplications): no buffer to re-materialise after meta
    device construction or checkpoint loading, and no precision loss if the model is cast to bf16.
    """

    def __init__(self, theta: float, rope_dim: int):
        super().__init__()
        self.theta = theta
        self.rope_dim = rope_dim

    # computed outside torch.compile: inside the graph, inductor would recompute pow, cos and sin for every element
    # of q and k in each kernel that reads them (forward and backward), instead of reading the T x R/2 table
    @torch.compiler.disable
    def forward(self, positions: torch.Tensor):
        """positions [T] or [B, T] -> (cos, sin), each [..., T, R/2]."""
        exponents = torch.arange(0, self.rope_dim, 2, device=positions.device, dtype=torch.float32) / self.rope_dim
        angles = positions[..., None].float() * (1.0 / self.theta**exponents)
        return angles.cos(), angles.sin()

    def extra_repr(self):
        return f"theta={self.theta}, rope_dim={self.rope_dim}"


def apply_rotary_emb(x, cos, sin):
    """Rotate interleaved pairs (2j, 2j+1) of the first R = 2 * cos.shape[-1] coordinates of each head.

    x [B, T, heads, hd]; cos/sin [T, R/2] or [B, T, R/2]. Lingua's (Meta Llama's) layout, computed in fp32."""
    R = 2 * cos.shape[-1]
    pairs = upcast(x[..., :R]).unflatten(-1, (R // 2, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[..., None, :], sin[..., None, :]  # broadcast over heads
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).to(x.dtype)
    return rotated if R == x.shape[-1] else torch.cat((rotated, x[..., R:]), dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# Documents (Canon layers restart at each: ShortConvolution's doc_ids)
# ----------------------------------------------------------------------------------------------------------------


def document_ids(tokens: torch.Tensor, bos_id: int) -> torch.Tensor:
    """[B, T] index of the document each position belongs to: a new document starts at every BOS token."""
    return torch.cumsum(tokens == bos_id, dim=1)


# ----------------------------------------------------------------------------------------------------------------
# Attention (QK-norm, Canon-B, partial RoPE, GQA) and feed-forward (Canon-D)
# ----------------------------------------------------------------------------------------------------------------


def _mask(cache):
    """Which of this call's tokens are real (not left padding) during generation; None in training."""
    return None if cache is None else cache.owner.new_token_mask


class Attention(nn.Module):
    def __init__(self, args: BaseTransformerArgs):
        super().__init__()
        self.dim = args.dim
        self.n_heads, self.n_kv_heads, self.head_dim = attention_shape(args)
        q_width, kv_width = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.split_sizes = (q_width, kv_width, kv_width)
        self.wq = nn.Linear(args.dim, q_width, bias=False)
        self.wk = nn.Linear(args.dim, kv_width, bias=False)
        self.wv = nn.Linear(args.dim, kv_width, bias=False)
        self.wo = nn.Linear(q_width, args.dim, bias=False)
        if args.qk_norm:
            self.q_norm = RMSNorm(q_width, eps=args.norm_eps)
            self.k_norm = RMSNorm(kv_width, eps=args.norm_eps)
        if "B" in args.canon_set:
            self.canonB = create_canon(sum(self.split_sizes), args)

    def forward(self, x, rope, attn_mask=None, doc_ids=None, cache=None):
        """x [B, T, dim]; rope = (cos, sin); attn_mask: None (causal) or a boolean [B, 1, T, S] (True = attend);
        cache: this layer's LayerCache (generation), whose keys/values precede the T new ones."""
        B, T, _ = x.shape
        q, k, v = joint_projection(x, (self.wq, self.wk, self.wv), cache).split(self.split_sizes, dim=-1)
        # the QK-norm, then Canon-B on [q | k | v], each part with its channels' taps (no concatenation; in eager
        # training each norm runs fused with its part's conv)
        norms = (self.q_norm, self.k_norm, None) if hasattr(self, "q_norm") else None
        canon = getattr(self, "canonB", None)
        q, k, v = canon_parts(canon, (q, k, v), cache, "canonB", _mask(cache), doc_ids, norms)
        q = apply_rotary_emb(q.view(B, T, self.n_heads, self.head_dim), *rope)
        k = apply_rotary_emb(k.view(B, T, self.n_kv_heads, self.head_dim), *rope)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        gqa = self.n_kv_heads != self.n_heads
        if gqa and attn_mask is not None:
            # masked SDPA runs the memory-efficient kernel, which may lack native GQA: give every query head its kv
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            gqa = False
        # without a mask: causal when queries and keys are the same positions; a decoding step sees every key
        causal = attn_mask is None and q.shape[2] == k.shape[2]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, enable_gqa=gqa)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))

    def reset_parameters(self, init_std=None, factor=1.0):
        std = init_std or self.dim**-0.5
        for linear in (self.wq, self.wk, self.wv):
            trunc_normal_(linear.weight, std)
        trunc_normal_(self.wo.weight, std / factor)
        if hasattr(self, "q_norm"):
            self.q_norm.reset_parameters()
            self.k_norm.reset_parameters()


class FeedForward(nn.Module):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x), with Canon-D on [w1 x | w3 x]."""

    def __init__(self, args: BaseTransformerArgs):
        super().__init__()
        self.dim, self.hidden_dim = args.dim, ffn_hidden_dim(args)
        self.w1 = nn.Linear(self.dim, self.hidden_dim, bias=False)
        self.w3 = nn.Linear(self.dim, self.hidden_dim, bias=False)
        self.w2 = nn.Linear(self.hidden_dim, self.dim, bias=False)
        if "D" in args.canon_set:
            self.canonD = create_canon(2 * self.hidden_dim, args)

    def forward(self, x, doc_ids=None, cache=None):
        gate_up = joint_projection(x, (self.w1, self.w3), cache)
        canon = getattr(self, "canonD", None)
        return self.w2(canon_swiglu(gate_up, canon, cache, "canonD", _mask(cache), doc_ids))

    def reset_parameters(self, init_std=None, factor=1.0):
        in_std = init_std or self.dim**-0.5
        out_std = (init_std or self.hidden_dim**-0.5) / factor
        trunc_normal_(self.w1.weight, in_std)
        trunc_normal_(self.w3.weight, in_std)
        trunc_normal_(self.w2.weight, out_std)


# ----------------------------------------------------------------------------------------------------------------
# Block and base model
# ----------------------------------------------------------------------------------------------------------------


class TransformerBlock(nn.Module):
    """Pre-norm block; Canon-A after attention_norm, Canon-C after ffn_norm (registered in the checkpoints' order)."""

    def __init__(self, args: BaseTransformerArgs):
        super().__init__()
        if "A" in args.canon_set:
            self.canonA = create_canon(args.dim, args)
        if "C" in args.canon_set:
            self.canonC = create_canon(args.dim, args)
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def _norm_then_canon(self, h, norm, site, doc_ids, cache):
        canon = getattr(self, site, None)
        return norm_then_canon(h, norm.weight, norm.eps, canon, cache, site, _mask(cache), doc_ids)

    def forward(self, x, rope, attn_mask=None, doc_ids=None, cache=None):
        u = self._norm_then_canon(x, self.attention_norm, "canonA", doc_ids, cache)
        h = x + self.attention(u, rope, attn_mask, doc_ids, cache)
        u = self._norm_then_canon(h, self.ffn_norm, "canonC", doc_ids, cache)
        return h + self.feed_forward(u, doc_ids, cache)

    def init_weights(self, init_std=None, factor=1.0):
        self.attention.reset_parameters(init_std, factor)
        self.attention_norm.reset_parameters()
        self.feed_forward.reset_parameters(init_std, factor)
        self.ffn_norm.reset_parameters()
        # Canon layers keep their own init (canon.init_canon) whatever init_base_std says
        for module in self.modules():
            if isinstance(module, ShortConvolution):
                module.reset_parameters()


def attention_mask(doc_ids, T, sliding_window, device):
    """None for plain causal attention (sdpa's is_causal), else a boolean [B or 1, 1, T, T] mask: causal, within
    one document when doc_ids [B, T] is given, and at most `sliding_window` keys back when set."""
    if doc_ids is None and sliding_window is None:
        return None
    pos = torch.arange(T, device=device)
    allowed = causal_mask(pos, pos, sliding_window)[None]
    if doc_ids is not None:
        allowed = allowed & (doc_ids[:, :, None] == doc_ids[:, None, :])
    return allowed[:, None]


class BaseTransformer(nn.Module):
    def __init__(self, args: BaseTransformerArgs):
        super().__init__()
        check_args(args)
        self.dim, self.n_layers, self.max_seqlen = args.dim, args.n_layers, args.max_seqlen
        self.init_base_std, self.init_std_factor = args.init_base_std, args.init_std_factor
        self.rope_embeddings = RotaryEmbedding(theta=args.rope_theta, rope_dim=rotary_dim(args))
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))

    def forward(self, h, tok_idx=None, doc_ids=None, sliding_window=None, cache=None):
        """Run the blocks on h [B, T, dim]. tok_idx: RoPE positions ([T] or [B, T]; default 0..T-1);
        doc_ids [B, T]: keep attention and Canon layers within documents; cache: an InferenceCache the T new
        tokens extend (positions and masks then come from the cache, and doc_ids must be None)."""
        T = h.shape[1]
        if cache is None:
            positions = torch.arange(T, device=h.device) if tok_idx is None else tok_idx
            mask = attention_mask(doc_ids, T, sliding_window, h.device)
        else:
            positions, mask = cache.prepare(T, sliding_window, h.device)
        rope = self.rope_embeddings(positions)
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, mask, doc_ids, None if cache is None else cache.layers[i])
        if cache is not None:
            cache.length += T
        return h

    def init_weights(self):
        """Initialise the blocks: truncated normals scaled per init_std_factor, norms to 1, Canon conv default."""
        for depth, layer in enumerate(self.layers):
            factor = init_std_factor(self.init_std_factor, depth, self.n_layers, self.dim)
            layer.init_weights(self.init_base_std, factor)
