"""The small parts every model of this project shares: RMSNorm, the causal attention mask, the joint q/k/v (gate/up)
projection, the normal init of linear layers and the SwiGLU MLP width. Torch only (no transformers), one flat file
like `canon.py`: the Hugging Face models import it relatively (save_pretrained copies it next to the weights), and
`huggingface_linear/layers.py` and `lingua_modified/lingua/layers.py` are links to it, so the three packages run one
definition of each.
"""

import torch
import torch.nn.functional as F
from torch import nn


def upcast(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 (fp64 stays fp64): half-precision inputs accumulate in fp32."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def rms_normalize(h, norm_weight, eps):
    """(norm_weight * h / rms(h), rstd): statistics in fp32, the normalised tensor cast back to h's dtype before the
    weight multiplies it. Returns rstd too, for the fused Canon paths that recompute the norm in backward."""
    h32 = upcast(h)
    rstd = torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)
    return norm_weight * (h32 * rstd).to(h.dtype), rstd


class RMSNorm(nn.Module):
    """weight * x / rms(x) over the last dimension, statistics in fp32 (`rms_normalize`)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x):
        return rms_normalize(x, self.weight, self.eps)[0]

    def reset_parameters(self):
        nn.init.ones_(self.weight)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def causal_mask(query_positions: torch.Tensor, key_positions: torch.Tensor, sliding_window=None) -> torch.Tensor:
    """Boolean [Tq, Tk]: True where the query at query_positions[i] may attend to the key at key_positions[j], that
    is, the key is not later than the query and, with `sliding_window`, fewer than that many positions back."""
    queries, keys = query_positions[:, None], key_positions[None, :]
    allowed = keys <= queries
    if sliding_window is not None:
        allowed = allowed & (queries - keys < sliding_window)
    return allowed


def joint_projection(x, projections, cache):
    """cat([p(x) for p in projections], -1): [q | k | v] for attention, [gate | up] for the MLP.

    This is the one place that decides between one GEMM and several. A call without a cache (training, or a forward
    without generation) runs one GEMM on the concatenated weights, which costs one copy of the weights and saves
    launches over the T tokens. A decoding call runs the projections one by one and concatenates their outputs: for
    a token or two, re-concatenating the weights every step would cost more than it saves. Projections that are not
    plain nn.Linear (adapters, quantisation) always run as modules.
    """
    if cache is None and all(type(p) is nn.Linear for p in projections):
        bias = None if projections[0].bias is None else torch.cat([p.bias for p in projections])
        return F.linear(x, torch.cat([p.weight for p in projections]), bias)
    return torch.cat([p(x) for p in projections], dim=-1)


def init_normal(module: nn.Module, std: float, fns=nn.init) -> None:
    """Weight ~ N(0, std^2), bias (if any) zero: the init of the models' linear layers and embeddings. `fns`: the
    init functions to use (transformers 5 passes its own, which skip parameters loaded from a checkpoint)."""
    fns.normal_(module.weight, mean=0.0, std=std)
    if getattr(module, "bias", None) is not None:
        fns.zeros_(module.bias)


def mlp_width(dim: int, width=None, ratio=4, multiplier=None, multiple_of: int = 256) -> int:
    """The SwiGLU MLP width: `width` when given, else 2/3 of ratio * dim (a three-matrix MLP with the parameters of a
    two-matrix one of width ratio * dim), times `multiplier`, rounded up to a multiple of `multiple_of`."""
    if width is not None:
        return width
    width = int(2 * ratio * dim / 3)
    if multiplier is not None:
        width = int(multiplier * width)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)
