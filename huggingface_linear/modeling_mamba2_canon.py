"""Mamba2Canon for Hugging Face transformers: Mamba2 with Canon layers and an optional gated MLP per block.

Read top to bottom: the gated norm, the mixer (in_proj, Canon-B on its whole output, the original short conv "b" on
[x | B | C], the SSD recurrence, gated RMSNorm, out_proj), the MLP (Canon-D), the block (Canon-A/C), the base model
(`backbone`) and the causal LM head (float32 logits); the Lingua config builder is in `lingua_bridge.py`. Every path
runs in plain PyTorch on any device; mamba_ssm kernels are used for CUDA tensors when installed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.generation import GenerationMixin
from transformers.modeling_utils import PreTrainedModel

# Remote-code loading copies into its module cache only the sibling files that this file imports itself, so it imports
# every file the model needs, lingua_checkpoint.py (used by linear_common.py) included
from .canon import canon_call, canon_swiglu, create_canon, init_canon
from .configuration_mamba2_canon import Mamba2CanonConfig
from .layers import RMSNorm, init_normal, upcast
from .linear_common import (
    LinearCanonBackboneMixin,
    LinearCanonLMMixin,
    init_decay,
    is_canon,
    norm_canon_site,
    short_conv,
)
from .linear_recurrences import ssd
from .lingua_bridge import mamba2_config_fields
from .lingua_checkpoint import find_lingua_folder  # noqa: F401 (see above)
from .transformers_compat import GradientCheckpointingLayer, cache_keys, init

A_INIT_RANGE = (1.0, 16.0)  # A ~ U(1, 16), A_log = log A (GDN uses U(0, 16))


class MambaRMSNormGated(RMSNorm):
    """RMSNorm(y * SiLU(z)) * weight (gate first), statistics in float32 over groups of I / n_groups channels (what
    mamba_ssm's fused training kernel does; with n_groups = 1, as in every recipe, that is all I channels)."""

    def __init__(self, hidden_size, group_size, eps=1e-6):
        super().__init__(hidden_size, eps)
        self.group_size = group_size

    def forward(self, y, z):
        h = (upcast(y) * F.silu(upcast(z))).unflatten(-1, (-1, self.group_size))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.flatten(-2).to(y.dtype)


class Mamba2CanonMixer(nn.Module):
    """Per head: S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T, y_t = S_t C_t + D x_t, with [z | xBC | dt] = in_proj(u)
    (+ Canon-B), xBC = SiLU(conv1d(xBC)) (the identity with noconv1d), dt = softplus(dt + dt_bias) within
    time_step_limit; out = out_proj(RMSNorm(y * SiLU(z)))."""

    def __init__(self, config: Mamba2CanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        d, width, H = config.hidden_size, config.ssm_width, config.num_heads
        G, N = config.n_groups, config.state_size
        self.num_heads, self.head_dim, self.n_groups, self.state_size = H, config.head_dim, G, N
        self.time_step_limit = tuple(config.time_step_limit)
        self.noconv1d = config.noconv1d
        conv_dim = width + 2 * G * N
        self.split_sizes = (width, conv_dim, H)
        self.dt_bias = nn.Parameter(torch.ones(H))
        self.A_log = nn.Parameter(torch.zeros(H))
        self.D = nn.Parameter(torch.ones(H))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.conv1d = short_conv(conv_dim, config.conv_kernel, bias=config.use_conv_bias)
        if self.noconv1d:
            # kept for the state-dict layout but never applied (the identity stands in), so frozen
            self.conv1d.weight.requires_grad_(False)
        projection = 2 * width + 2 * G * N + H
        self.in_proj = nn.Linear(d, projection, bias=config.use_bias)
        if "B" in config.canon_set:
            self.canonB = create_canon(projection, config)
        self.norm = MambaRMSNormGated(width, width // G, eps=config.layer_norm_epsilon)
        self.out_proj = nn.Linear(width, d, bias=config.use_bias)

    def forward(self, u, mask=None, cache=None):
        B, T, _ = u.shape
        if mask is not None:
            u = u * mask[..., None].to(u.dtype)
        zxbcdt = self.in_proj(u)
        if hasattr(self, "canonB"):
            zxbcdt = canon_call(self.canonB, zxbcdt, cache, (self.layer_idx, "canonB"), mask)
        z, xBC, dt = zxbcdt.split(self.split_sizes, dim=-1)
        if not self.noconv1d:
            xBC = canon_call(self.conv1d, xBC, cache, (self.layer_idx, "conv1d"), mask)
        GN = self.n_groups * self.state_size
        x, Bm, Cm = xBC.split((xBC.shape[-1] - 2 * GN, GN, GN), dim=-1)
        if mask is not None:  # padded tokens write nothing into the state
            x = x * mask[..., None].to(x.dtype)
        dt = F.softplus(upcast(dt) + upcast(self.dt_bias))
        low, high = self.time_step_limit
        if low > 0.0 or high != math.inf:
            dt = dt.clamp(low, high)
        initial = None if cache is None else cache.get_state(self.layer_idx, "recurrent")
        y, state = ssd(
            x.view(B, T, self.num_heads, self.head_dim), dt, -upcast(self.A_log).exp(),
            Bm.view(B, T, self.n_groups, -1), Cm.view(B, T, self.n_groups, -1), self.D,
            initial_state=initial, output_final_state=cache is not None,
        )  # fmt: skip
        if cache is not None:
            cache.set_state(self.layer_idx, "recurrent", state)
        return self.out_proj(self.norm(y.reshape(B, T, -1), z))


class Mamba2CanonMLP(nn.Module):
    """down_proj(SiLU(gate) * up) with [gate | up] = both_proj(x) and Canon-D on it."""

    def __init__(self, config: Mamba2CanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        width = config.mlp_width
        self.both_proj = nn.Linear(config.hidden_size, 2 * width, bias=False)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=False)
        if "D" in config.canon_set:
            self.canonD = create_canon(2 * width, config)

    def forward(self, x, mask=None, cache=None):
        canon = getattr(self, "canonD", None)
        return self.down_proj(canon_swiglu(self.both_proj(x), canon, cache, (self.layer_idx, "canonD"), mask))


class Mamba2CanonBlock(GradientCheckpointingLayer):
    """x + mixer(canonA(norm(x))), then (with mlp_type) h + mlp(canonC(pre_mlp_layernorm(h))). With
    residual_in_fp32 the residual stream is kept in float32."""

    def __init__(self, config: Mamba2CanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        if "A" in config.canon_set:
            self.canonA = create_canon(config.hidden_size, config)
        self.mixer = Mamba2CanonMixer(config, layer_idx)
        if config.mlp_type is not None:
            self.pre_mlp_layernorm = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
            if "C" in config.canon_set:
                self.canonC = create_canon(config.hidden_size, config)
            self.mlp = Mamba2CanonMLP(config, layer_idx)

    def forward(self, x, mask=None, cache=None):
        i = self.layer_idx
        residual = x.float() if self.residual_in_fp32 else x
        u = norm_canon_site(x.to(self.norm.weight.dtype), self.norm, getattr(self, "canonA", None), "canonA", i,
                            mask, cache)  # fmt: skip
        h = residual + self.mixer(u, mask, cache)
        if not hasattr(self, "mlp"):
            return h
        u = norm_canon_site(h, self.pre_mlp_layernorm, getattr(self, "canonC", None), "canonC", i, mask, cache)
        return h + self.mlp(u.to(self.norm.weight.dtype), mask, cache)


class Mamba2CanonPreTrainedModel(PreTrainedModel):
    config_class = Mamba2CanonConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Mamba2CanonBlock"]
    _skip_keys_device_placement = cache_keys()
    _supports_cache_class = True

    def _init_weights(self, module):
        """Mamba2's own init: Canon layers and the mixer conv keep PyTorch's conv default (the conv is zero and
        frozen with noconv1d); Linear layers PyTorch's default with zero biases; the embedding N(0,
        initializer_range); A ~ U(1, 16) as A_log, D = 1, dt_bias = softplus^{-1}(dt) with dt log-uniform in
        [time_step_min, time_step_max] floored at time_step_floor; norms 1."""
        config = self.config
        if is_canon(module):
            init_canon(module, init)
        elif isinstance(module, nn.Conv1d):  # the mixer's own conv1d
            if module.weight.requires_grad:
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            else:
                init.zeros_(module.weight)
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init_normal(module, config.initializer_range, init)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, Mamba2CanonMixer):
            init_decay(module.A_log, module.dt_bias, A_INIT_RANGE, config.time_step_min, config.time_step_max,
                       config.time_step_floor)  # fmt: skip
            init.ones_(module.D)


class Mamba2CanonModel(LinearCanonBackboneMixin, Mamba2CanonPreTrainedModel):
    block_class = Mamba2CanonBlock
    final_norm = "norm_f"
    norm_eps_field = "layer_norm_epsilon"
    pad_embedding = False

    def __init__(self, config: Mamba2CanonConfig):
        super().__init__(config)
        self._register_load_state_dict_pre_hook(self._rename_legacy_embedding)

    @staticmethod
    def _rename_legacy_embedding(state_dict, prefix, *args):
        """Older Mamba checkpoints call the embedding "embedding"."""
        for key in [k for k in state_dict if k.startswith(prefix + "embedding.")]:
            state_dict[prefix + "embeddings." + key[len(prefix + "embedding.") :]] = state_dict.pop(key)


class Mamba2CanonForCausalLM(LinearCanonLMMixin, Mamba2CanonPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}
    backbone_class = Mamba2CanonModel
    float_logits = True

    @staticmethod
    def build_config_from_yaml(args) -> Mamba2CanonConfig:
        """The config of a Lingua `model:` section (see `lingua_bridge.mamba2_config_fields`)."""
        return Mamba2CanonConfig(**mamba2_config_fields(args))


Mamba2CanonConfig.register_for_auto_class()
Mamba2CanonModel.register_for_auto_class("AutoModel")
Mamba2CanonForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["Mamba2CanonForCausalLM", "Mamba2CanonModel", "Mamba2CanonPreTrainedModel"]
