"""GLACanon for Hugging Face transformers: gated linear attention with Canon layers ("GLA5" in the recipes).

Read top to bottom: the token mixer (GLA with low-rank gates, the original q/k/v short convs "b", Canon-B), the MLP
(one [gate | up] projection, Canon-D), the block (Canon-A/C), the base model, the causal LM head and the config
builder for Lingua runs. The recurrence itself lives in `linear_recurrences.py`; the decode cache, norms and the
Canon plumbing in `linear_common.py`; the Lingua config builder in `lingua_bridge.py`.
"""

import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_utils import PreTrainedModel

# Remote-code loading copies into its module cache only the sibling files that this file imports itself, so it imports
# every file the model needs, lingua_checkpoint.py (used by linear_common.py) included
from .canon import canon_call, canon_parts, canon_swiglu, create_canon
from .configuration_gla_canon import GLACanonConfig
from .layers import RMSNorm, joint_projection, mlp_width, upcast
from .linear_common import (
    GatedRMSNorm,
    LinearCanonBackboneMixin,
    LinearCanonLMMixin,
    PreNormCanonBlock,
    init_fla_style,
    low_rank_linear,
    short_conv,
)
from .linear_recurrences import gla
from .lingua_bridge import gla_config_fields
from .lingua_checkpoint import find_lingua_folder  # noqa: F401 (see above)
from .transformers_compat import cache_keys

GATE_RANK = 16  # rank of the forget-gate projection gk_proj (always low-rank)
GATE_LOGIT_NORMALIZER = 16  # log decay = logsigmoid(gk_proj(x)) / 16


class GatedCanonLinearAttention(nn.Module):
    """GLA: S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t / sqrt(dk), then a per-head RMSNorm gated by
    SiLU(g_proj(x)) and o_proj. q, k, v are SiLU(conv(proj(x))) with the original short convs, SiLU(proj(x))
    without them; Canon-B (if in canon_set) then acts on [q | k | v]."""

    def __init__(self, config: GLACanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        d, K, V, H = config.hidden_size, config.key_dim, config.value_dim, config.num_heads
        self.num_heads, self.head_k_dim, self.head_v_dim = H, K // H, V // H
        self.split_sizes = (K, K, V)
        self.clamp_min = config.clamp_min
        self.feature_map = ACT2FN[config.feature_map] if config.feature_map is not None else None
        self.q_proj = nn.Linear(d, K, bias=False)
        self.k_proj = nn.Linear(d, K, bias=False)
        self.v_proj = nn.Linear(d, V, bias=False)
        if config.use_output_gate:
            rank = config.output_gate_rank
            self.g_proj = nn.Linear(d, V, bias=False) if rank is None else low_rank_linear(d, rank, V)
        self.use_short_conv = config.use_short_conv
        if self.use_short_conv:
            self.q_conv1d = short_conv(K, config.conv_size)
            self.k_conv1d = short_conv(K, config.conv_size)
            self.v_conv1d = short_conv(V, config.conv_size)
        if "B" in config.canon_set:
            self.canonB = create_canon(sum(self.split_sizes), config)
        self.gk_proj = low_rank_linear(d, GATE_RANK, K)
        self.o_proj = nn.Linear(V, d, bias=False)
        # the published checkpoints name this norm after the fused kernel that computed it; the maths is the same
        fused = config.use_output_gate and config.fuse_norm and not config.zeyuan_layernorm
        self.norm_name = "g_norm_swish_gate" if fused else "g_norm"
        self.add_module(self.norm_name, GatedRMSNorm(self.head_v_dim, eps=config.norm_eps))

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
        if self.feature_map is not None:
            q, k = self.feature_map(q), self.feature_map(k)
        gk = F.logsigmoid(upcast(self.gk_proj(x))) / GATE_LOGIT_NORMALIZER
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        if mask is not None:
            v = v * mask[..., None].to(v.dtype)  # padded tokens write nothing into the state
        H, dk, dv = self.num_heads, self.head_k_dim, self.head_v_dim
        initial = None if cache is None else cache.get_state(self.layer_idx, "recurrent")
        o, state = gla(
            q.view(B, T, H, dk), k.view(B, T, H, dk), v.view(B, T, H, dv), gk.view(B, T, H, dk),
            initial_state=initial, output_final_state=cache is not None,
        )  # fmt: skip
        if cache is not None:
            cache.set_state(self.layer_idx, "recurrent", state)
        gate = self.g_proj(x).view(B, T, H, dv) if hasattr(self, "g_proj") else None
        o = getattr(self, self.norm_name)(o, gate)
        return self.o_proj(o.reshape(B, T, -1))


class GLACanonMLP(nn.Module):
    """down_proj(SiLU(gate) * up) with [gate | up] = gate_proj(x) (one d -> 2I matrix) and Canon-D on it."""

    def __init__(self, config: GLACanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        width = mlp_width(config.hidden_size, config.intermediate_size, ratio=config.hidden_ratio or 4)
        self.gate_proj = nn.Linear(config.hidden_size, 2 * width, bias=False)
        if "D" in config.canon_set:
            self.canonD = create_canon(2 * width, config)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=False)

    def forward(self, x, mask=None, cache=None):
        canon = getattr(self, "canonD", None)
        return self.down_proj(canon_swiglu(self.gate_proj(x), canon, cache, (self.layer_idx, "canonD"), mask))


class GLABlock(PreNormCanonBlock):
    def __init__(self, config: GLACanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        if "A" in config.canon_set:
            self.canonA = create_canon(config.hidden_size, config)
        self.attn = GatedCanonLinearAttention(config, layer_idx)
        if "C" in config.canon_set:
            self.canonC = create_canon(config.hidden_size, config)
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GLACanonMLP(config, layer_idx)


class GLACanonPreTrainedModel(PreTrainedModel):
    config_class = GLACanonConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GLABlock"]
    _skip_keys_device_placement = cache_keys()
    _supports_cache_class = True

    def _init_weights(self, module):
        init_fla_style(module, self.config)


class GLACanonModel(LinearCanonBackboneMixin, GLACanonPreTrainedModel):
    block_class = GLABlock


class GLACanonForCausalLM(LinearCanonLMMixin, GLACanonPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}
    backbone_class = GLACanonModel

    @staticmethod
    def build_config_from_yaml(args) -> GLACanonConfig:
        """The config of a Lingua `model:` section (see `lingua_bridge.gla_config_fields`)."""
        return GLACanonConfig(**gla_config_fields(args))


GLACanonConfig.register_for_auto_class()
GLACanonModel.register_for_auto_class("AutoModel")
GLACanonForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["GLACanonForCausalLM", "GLACanonModel", "GLACanonPreTrainedModel"]
