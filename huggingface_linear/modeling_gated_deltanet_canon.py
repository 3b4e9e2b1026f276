"""GatedDeltaNetCanon for Hugging Face transformers: Gated DeltaNet with Canon layers ("GDN2" in the recipes).

Read top to bottom: the token mixer (gated delta rule with L2-normalised q/k, the original q/k/v short convs "b",
Canon-B, a low-rank output gate), the MLP (Canon-D; its key names depend on D, as in the published checkpoints), the
block (Canon-A/C), the base model and the causal LM head. The recurrence lives in `linear_recurrences.py`; the cache,
norms, Canon plumbing and the shared forwards in `linear_common.py`; the Lingua config builder in `lingua_bridge.py`.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.generation import GenerationMixin
from transformers.modeling_utils import PreTrainedModel

# Remote-code loading copies into its module cache only the sibling files that this file imports itself, so it imports
# every file the model needs, lingua_checkpoint.py (used by linear_common.py) included
from .canon import canon_call, canon_parts, canon_swiglu, create_canon
from .configuration_gated_deltanet_canon import GatedDeltaNetCanonConfig
from .layers import RMSNorm, joint_projection, mlp_width, upcast
from .linear_common import (
    GatedRMSNorm,
    LinearCanonBackboneMixin,
    LinearCanonLMMixin,
    PreNormCanonBlock,
    init_decay,
    init_fla_style,
    low_rank_linear,
    short_conv,
)
from .linear_recurrences import gated_delta_rule
from .lingua_bridge import gdn_config_fields
from .lingua_checkpoint import find_lingua_folder  # noqa: F401 (see above)
from .transformers_compat import cache_keys

A_INIT_RANGE = (0.0, 16.0)  # A ~ U(0, 16), A_log = log A (Mamba2 uses U(1, 16))
DT_INIT = (0.001, 0.1, 1e-4)  # dt log-uniform in [0.001, 0.1], floored at 1e-4 (fixed, not config fields)


class GatedDeltaNetCanon(nn.Module):
    """Gated delta rule per head: S <- exp(g) S; u = beta (v - S^T k); S <- S + k u^T; o = S^T q / sqrt(dk), with q, k
    L2-normalised, beta = sigmoid(b_proj x), g = -exp(A_log) softplus(a_proj x + dt_bias); then a per-head RMSNorm
    gated by SiLU(g_proj x) and o_proj."""

    def __init__(self, config: GatedDeltaNetCanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        d, H = config.hidden_size, config.num_heads
        self.num_heads, self.head_k_dim, self.head_v_dim = H, config.head_dim, config.head_v_dim
        key_dim, value_dim = H * self.head_k_dim, H * self.head_v_dim
        self.split_sizes = (key_dim, key_dim, value_dim)
        self.q_proj = nn.Linear(d, key_dim, bias=False)
        self.k_proj = nn.Linear(d, key_dim, bias=False)
        self.v_proj = nn.Linear(d, value_dim, bias=False)
        self.b_proj = nn.Linear(d, H, bias=False)
        self.a_proj = nn.Linear(d, H, bias=False)
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True
        if "B" in config.canon_set:
            self.canonB = create_canon(sum(self.split_sizes), config)
        self.use_short_conv = config.use_short_conv
        if self.use_short_conv:
            self.q_conv1d = short_conv(key_dim, config.conv_size)
            self.k_conv1d = short_conv(key_dim, config.conv_size)
            self.v_conv1d = short_conv(value_dim, config.conv_size)
        if config.use_gate:
            rank = config.output_gate_rank
            self.g_proj = nn.Linear(d, value_dim, bias=False) if rank is None else low_rank_linear(d, rank, value_dim)
        self.o_norm = GatedRMSNorm(self.head_v_dim, eps=config.norm_eps)
        self.o_proj = nn.Linear(value_dim, d, bias=False)

    def forward(self, x, mask=None, cache=None):
        B, T, _ = x.shape
        q, k, v = joint_projection(x, (self.q_proj, self.k_proj, self.v_proj), cache).split(self.split_sizes, dim=-1)
        i = self.layer_idx
        if self.use_short_conv:
            q = canon_call(self.q_conv1d, q, cache, (i, "q_conv1d"), mask)
            k = canon_call(self.k_conv1d, k, cache, (i, "k_conv1d"), mask)
            v = canon_call(self.v_conv1d, v, cache, (i, "v_conv1d"), mask)
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k, v = canon_parts(getattr(self, "canonB", None), (q, k, v), cache, (i, "canonB"), mask)
        beta = upcast(self.b_proj(x)).sigmoid()
        g = -upcast(self.A_log).exp() * F.softplus(upcast(self.a_proj(x)) + upcast(self.dt_bias))
        if mask is not None:  # padded tokens neither decay nor write the state
            beta, g = beta * mask[..., None], g * mask[..., None]
        H, dk, dv = self.num_heads, self.head_k_dim, self.head_v_dim
        initial = None if cache is None else cache.get_state(self.layer_idx, "recurrent")
        o, state = gated_delta_rule(
            q.view(B, T, H, dk), k.view(B, T, H, dk), v.view(B, T, H, dv), g, beta,
            initial_state=initial, output_final_state=cache is not None,
        )  # fmt: skip
        if cache is not None:
            cache.set_state(self.layer_idx, "recurrent", state)
        gate = self.g_proj(x).view(B, T, H, dv) if hasattr(self, "g_proj") else None
        return self.o_proj(self.o_norm(o, gate).reshape(B, T, -1))


class GatedDeltaNetCanonMLP(nn.Module):
    """down_proj(SiLU(gate) * up). With Canon-D: [gate | up] = both_proj(x) then canonD; without: two separate
    gate_proj / up_proj matrices (so GDN2Canon and GDN2conv checkpoints differ in MLP names, as published)."""

    def __init__(self, config: GatedDeltaNetCanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        d = config.hidden_size
        if getattr(config, "mlp_type", None) == "mlp10":
            width = 2 * d
        else:
            width = mlp_width(d, config.intermediate_size, ratio=config.hidden_ratio or 4)
        self.down_proj = nn.Linear(width, d, bias=False)
        if "D" in config.canon_set:
            self.canonD = create_canon(2 * width, config)
            self.both_proj = nn.Linear(d, 2 * width, bias=False)
        else:
            self.gate_proj = nn.Linear(d, width, bias=False)
            self.up_proj = nn.Linear(d, width, bias=False)

    def forward(self, x, mask=None, cache=None):
        if hasattr(self, "both_proj"):
            gate_up = self.both_proj(x)
        else:
            gate_up = joint_projection(x, (self.gate_proj, self.up_proj), cache)
        canon = getattr(self, "canonD", None)
        return self.down_proj(canon_swiglu(gate_up, canon, cache, (self.layer_idx, "canonD"), mask))


class GatedDeltaNetCanonBlock(PreNormCanonBlock):
    def __init__(self, config: GatedDeltaNetCanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        if "A" in config.canon_set:
            self.canonA = create_canon(config.hidden_size, config)
        if "C" in config.canon_set:
            self.canonC = create_canon(config.hidden_size, config)
        self.attn = GatedDeltaNetCanon(config, layer_idx)
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GatedDeltaNetCanonMLP(config, layer_idx)


class GatedDeltaNetCanonPreTrainedModel(PreTrainedModel):
    config_class = GatedDeltaNetCanonConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GatedDeltaNetCanonBlock"]
    _skip_keys_device_placement = cache_keys()
    _supports_cache_class = True

    def _init_weights(self, module):
        """As GLA (`init_fla_style`), plus the mixer's decay parameters: A ~ U(0, 16) as A_log = log A, and dt_bias
        = softplus^{-1}(dt) with dt log-uniform in [0.001, 0.1]."""
        init_fla_style(module, self.config)
        if isinstance(module, GatedDeltaNetCanon):
            init_decay(module.A_log, module.dt_bias, A_INIT_RANGE, *DT_INIT)


class GatedDeltaNetCanonModel(LinearCanonBackboneMixin, GatedDeltaNetCanonPreTrainedModel):
    block_class = GatedDeltaNetCanonBlock


class GatedDeltaNetCanonForCausalLM(LinearCanonLMMixin, GatedDeltaNetCanonPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}
    backbone_class = GatedDeltaNetCanonModel

    @staticmethod
    def build_config_from_yaml(args) -> GatedDeltaNetCanonConfig:
        """The config of a Lingua `model:` section (see `lingua_bridge.gdn_config_fields`)."""
        return GatedDeltaNetCanonConfig(**gdn_config_fields(args))


GatedDeltaNetCanonConfig.register_for_auto_class()
GatedDeltaNetCanonModel.register_for_auto_class("AutoModel")
GatedDeltaNetCanonForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["GatedDeltaNetCanonForCausalLM", "GatedDeltaNetCanonModel", "GatedDeltaNetCanonPreTrainedModel"]
