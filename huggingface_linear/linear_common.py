"""What GLACanon, GatedDeltaNetCanon and Mamba2Canon share: the decode cache, the gated norm, the Canon plumbing,
weight-init helpers, the base model and LM head with their generation hooks and Lingua loading.

The decode cache keeps, per layer, every state a recurrent model needs to continue a sequence: the recurrent state
of the token mixer, the short-convolution states (the architecture's own "b" convs) and the Canon A/B/C/D conv
states, all in one dict keyed by (layer index, name). One object per sequence batch, so every state stays in its own
layer's slot from prefill through every decode step (the layer-0 Canon-A state included).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .canon import ShortConvolution, init_canon, map_states, norm_then_canon
from .layers import RMSNorm, init_normal, rms_normalize
from .lingua_bridge import lingua_state_to_hf
from .lingua_checkpoint import (
    cast_and_place,
    find_lingua_folder,
    load_checked,
    pop_loading_keywords,
    read_lingua_folder,
)
from .transformers_compat import (
    CACHE_NAME,
    Cache,
    GradientCheckpointingLayer,
    init,
    init_cache_base,
    model_output,
    pick_cache,
    returned_cache,
)

# ----------------------------------------------------------------------------------------------------------------
# Decode cache
# ----------------------------------------------------------------------------------------------------------------


class LinearCanonCache(Cache):
    """All decode-time states of a linear model with Canon layers, keyed by (layer_idx, name).

    Names: "recurrent" (GLA/GDN [B, H, dk, dv], Mamba2 [B, H, P, N], float32), "q_conv1d"/"k_conv1d"/"v_conv1d"/
    "conv1d" (the architecture's short convs) and "canonA".."canonD", conv states [B, K-1, C] oldest first.
    Beam-search reordering and batch expansion/selection act on every state. Cropping is refused: a recurrent state
    cannot be rewound.
    """

    def __init__(self):
        init_cache_base(self)
        self.states: dict[tuple[int, str], torch.Tensor] = {}
        self.tokens_seen = 0

    def get_state(self, layer_idx: int, name: str):
        return self.states.get((layer_idx, name))

    def set_state(self, layer_idx: int, name: str, state: torch.Tensor) -> None:
        self.states[(layer_idx, name)] = state

    @property
    def conv_states(self) -> dict:
        """Where canon.py's conv_state finds the conv states: the same dict as every other state."""
        return self.states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.tokens_seen

    def has_previous_state(self, layer_idx=None, state_idx=None) -> bool:
        return self.tokens_seen > 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def batch_size(self) -> int:
        return next(iter(self.states.values())).shape[0] if self.states else -1

    def _map_states(self, fn):
        self.states = map_states(self.states, fn)

    def reorder_cache(self, beam_idx: torch.LongTensor):
        self._map_states(lambda s: s.index_select(0, beam_idx.to(s.device)))

    def batch_repeat_interleave(self, repeats: int):
        self._map_states(lambda s: s.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor):
        self._map_states(lambda s: s[indices])

    def reset(self):
        self.states = {}
        self.tokens_seen = 0

    def crop(self, tokens_to_remove: int):
        raise NotImplementedError(
            "LinearCanonCache cannot be cropped: recurrent states cannot be rewound (assisted/speculative decoding is "
            "not supported); re-run the prefix instead"
        )


# ----------------------------------------------------------------------------------------------------------------
# Gated norm (the other norms are layers.py's RMSNorm, whichever implementation `zeyuan_layernorm` names)
# ----------------------------------------------------------------------------------------------------------------


class GatedRMSNorm(RMSNorm):
    """The GLA/GDN output norm over each head's dv channels: RMSNorm(o) * SiLU(g) (no gate when g is None)."""

    def forward(self, x, gate=None):
        y = rms_normalize(x, self.weight, self.eps)[0]
        return y if gate is None else y * F.silu(gate)


# ----------------------------------------------------------------------------------------------------------------
# Canon plumbing and the block
# ----------------------------------------------------------------------------------------------------------------


def short_conv(channels: int, kernel: int, bias: bool = False) -> ShortConvolution:
    """The architecture's own short convolution ("b"): depthwise causal, SiLU, no residual. Tagged so that weight
    init treats it as a plain conv, not as a Canon layer."""
    conv = ShortConvolution(channels, kernel_size=kernel, bias=bias, activation=True, residual=False)
    conv.is_original_conv = True
    return conv


def is_canon(module) -> bool:
    return isinstance(module, ShortConvolution) and not getattr(module, "is_original_conv", False)


def norm_canon_site(h, norm, canon, name, layer_idx, mask, cache):
    """norm(h), then the Canon layer `canon` (A or C) when present; canon.py picks the formulation."""
    return norm_then_canon(h, norm.weight, norm.eps, canon, cache, (layer_idx, name), mask)


class PreNormCanonBlock(GradientCheckpointingLayer):
    """The GLA / GDN block: x + attn(canonA(attn_norm(x))), then h + mlp(canonC(mlp_norm(h))). Subclasses create the
    modules in the order of the published checkpoints (which fixes the state-dict order)."""

    def forward(self, x, mask=None, cache=None):
        i = self.layer_idx
        u = norm_canon_site(x, self.attn_norm, getattr(self, "canonA", None), "canonA", i, mask, cache)
        h = x + self.attn(u, mask, cache)
        u = norm_canon_site(h, self.mlp_norm, getattr(self, "canonC", None), "canonC", i, mask, cache)
        return h + self.mlp(u, mask, cache)


def low_rank_linear(in_features: int, rank: int, out_features: int, bias_out: bool = True) -> nn.Sequential:
    """Linear(in -> rank, no bias) then Linear(rank -> out, bias): the low-rank gate projections. Both halves carry
    `split_init_rank` for `zeyuan_split_init`."""
    pair = nn.Sequential(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias_out))
    for layer in pair:
        layer.split_init_rank = rank
    return pair


# ----------------------------------------------------------------------------------------------------------------
# Weight init helpers
# ----------------------------------------------------------------------------------------------------------------


def split_init_std(module: nn.Module, std: float, split_init: bool) -> float:
    """The init std of a linear layer: `std`, except that with `zeyuan_split_init` each half of a rank-r pair gets
    sqrt(std) / r^(1/4), so that the product of the two halves has std about `std` (without the flag the halves get
    `std` too)."""
    rank = getattr(module, "split_init_rank", None)
    return math.sqrt(std) / rank**0.25 if split_init and rank is not None else std


def init_fla_style(module, config) -> None:
    """GLA/GDN weight init: Canon layers keep PyTorch's conv default; Linear layers (low-rank halves scaled under
    zeyuan_split_init), the original short convs and the embedding get N(0, initializer_range); norms start at 1."""
    std = config.initializer_range
    if is_canon(module):
        init_canon(module, init)
    elif isinstance(module, (nn.Linear, nn.Conv1d)):
        init_normal(module, split_init_std(module, std, config.zeyuan_split_init), init)
    elif isinstance(module, nn.Embedding):
        init_normal(module, std, init)
    elif isinstance(module, RMSNorm):
        init.ones_(module.weight)


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def init_decay(A_log, dt_bias, A_range, dt_min, dt_max, dt_floor) -> None:
    """A ~ U(A_range) stored as A_log = log A; dt_bias = softplus^{-1}(dt) with dt log-uniform in [dt_min, dt_max],
    at least dt_floor. Drawn whole, in float32 from the CPU generator, then copied into the parameters."""
    H = A_log.shape[0]
    init.copy_(A_log, torch.empty(H).uniform_(*A_range).log())
    dt = torch.exp(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    init.copy_(dt_bias, inverse_softplus(dt.clamp(min=dt_floor)))


# ----------------------------------------------------------------------------------------------------------------
# Model-level helpers: masks, cache creation, the base model and the LM head
# ----------------------------------------------------------------------------------------------------------------


def prepare_cache(model, cache, use_cache):
    """The cache of this call: the one given, a new one for cached inference, or None (training)."""
    use_cache = model.config.use_cache if use_cache is None else use_cache
    if model.training and cache is None:
        use_cache = False
    if cache is not None and not isinstance(cache, LinearCanonCache):
        raise TypeError(
            f"{type(model).__name__} keeps recurrent and conv states in a LinearCanonCache; got "
            f"{type(cache).__name__}. Pass a LinearCanonCache() as the cache or let generate() create it."
        )
    if use_cache and cache is None:
        cache = LinearCanonCache()
    return cache


def refuse_packed_sequences(cu_seqlens):
    if cu_seqlens is not None:
        raise ValueError(
            "cu_seqlens (several sequences packed into one row) is not supported by these models; pass the sequences "
            "as a batch with an attention_mask instead"
        )


def token_mask(attention_mask, batch, length, past):
    """The [B, T] 0/1 mask of this call's tokens, or None when there is no padding.

    Accepts a 2-D mask over this call's tokens or over past + this call's tokens (what generate() passes)."""
    if attention_mask is None:
        return None
    shape = tuple(attention_mask.shape)
    if shape not in ((batch, length), (batch, past + length)):
        raise ValueError(
            f"attention_mask has shape {shape}; expected a 2-D 0/1 mask of shape (batch, new tokens) = "
            f"{(batch, length)} or (batch, past + new tokens) = {(batch, past + length)}"
        )
    mask = attention_mask[:, -length:]
    return None if bool(mask.all()) else mask


class LinearCanonBackboneMixin:
    """The three base models: `embeddings`, `layers` (of `block_class`), a final RMSNorm named `final_norm` (eps from
    the config field named by `norm_eps_field`). forward(): embed, blocks (each called as block(x, mask, cache)),
    final norm; the cache counts the tokens seen."""

    block_class = None
    final_norm = "norm"
    norm_eps_field = "norm_eps"
    pad_embedding = True  # padding_idx = pad_token_id (GLA/GDN; Mamba2's embedding has none)

    def __init__(self, config):
        super().__init__(config)
        padding_idx = config.pad_token_id if self.pad_embedding else None
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx)
        self.layers = nn.ModuleList([self.block_class(config, i) for i in range(config.num_hidden_layers)])
        self.add_module(self.final_norm, RMSNorm(config.hidden_size, eps=getattr(config, self.norm_eps_field)))
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        inputs_embeds=None,
        cache=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        past_key_values=None,
        cu_seqlens=None,
        **kwargs,
    ):
        """The blocks. The decode cache comes as `cache` or, as older callers name it, `past_key_values`."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(f"{type(self).__name__} needs exactly one of input_ids or inputs_embeds")
        refuse_packed_sequences(cu_seqlens)
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        cache = prepare_cache(self, pick_cache(cache, past_key_values), use_cache)
        batch, length = inputs_embeds.shape[:2]
        past = 0 if cache is None else cache.get_seq_length()
        mask = token_mask(attention_mask, batch, length, past)
        hidden = inputs_embeds
        all_hidden = [] if output_hidden_states else None
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden)
            hidden = layer(hidden, mask, cache)
        hidden = getattr(self, self.final_norm)(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        if cache is not None:
            cache.tokens_seen += length
        return model_output(
            BaseModelOutputWithPast,
            cache,
            self.config,
            return_dict,
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )


class LinearCanonLMMixin:
    """For the three *ForCausalLM classes: the LM forward, generate() support (its cache is a LinearCanonCache, always
    under `past_key_values`) and the Lingua bridge (`load_from_lingua_state`, Lingua folders in `from_pretrained`).
    The base model (of `backbone_class`) is the attribute named by `base_model_prefix`; `float_logits` casts logits
    to float32."""

    _is_stateful = True
    backbone_class = None
    float_logits = False

    def __init__(self, config):
        super().__init__(config)
        self.add_module(self.base_model_prefix, self.backbone_class(config))
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return getattr(self, self.base_model_prefix).embeddings

    def set_input_embeddings(self, value):
        getattr(self, self.base_model_prefix).embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        inputs_embeds=None,
        cache=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        logits_to_keep=0,
        past_key_values=None,
        cache_params=None,
        num_logits_to_keep=None,
        cu_seqlens=None,
        **kwargs,
    ):
        """`past_key_values` / `cache_params` (older and Mamba2 callers) name the cache too; `num_logits_to_keep`
        (older callers) is `logits_to_keep`."""
        refuse_packed_sequences(cu_seqlens)
        outputs = getattr(self, self.base_model_prefix)(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=pick_cache(pick_cache(cache, past_key_values), cache_params),
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        keep = num_logits_to_keep if num_logits_to_keep is not None else logits_to_keep
        keep = slice(-keep, None) if isinstance(keep, int) else keep
        logits = self.lm_head(outputs.last_hidden_state[:, keep, :])
        if self.float_logits:
            logits = logits.float()
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return model_output(
            CausalLMOutputWithPast,
            returned_cache(outputs),
            self.config,
            return_dict,
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
        )

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        given = model_kwargs.get(CACHE_NAME)
        if given is not None:
            if not isinstance(given, LinearCanonCache):
                raise TypeError(f"the cache must be a LinearCanonCache; got {type(given).__name__}")
            given._is_user_defined = True
            return
        if generation_config.use_cache is not False:
            model_kwargs[CACHE_NAME] = LinearCanonCache()

    def load_from_lingua_state(self, state_dict):
        """Load the state dict of apps/gla's `LMTransformer` ("trans." + this model's names). Strict: one error lists
        the missing and unexpected keys before anything is loaded. Returns the model."""
        renamed = lingua_state_to_hf(state_dict)
        load_checked(self, renamed, set(renamed) - set(self.state_dict()))
        return self

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, variant=None, **kwargs):
        """A Hugging Face folder or repo as usual, or a Lingua folder or Hub repo (`<variant>/params.json` +
        `consolidated.pth`, variant "default" unless given; the folder itself also works). For Lingua checkpoints the
        config comes from `build_config_from_yaml(params["model"])`; `dtype` and `device_map` (a device) apply."""
        folder = find_lingua_folder(
            pretrained_model_name_or_path, variant, kwargs.get("local_files_only", False), kwargs.get("token")
        )
        if folder is None:
            if variant is not None:
                kwargs["variant"] = variant
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        loading = pop_loading_keywords(kwargs)
        params, state = read_lingua_folder(folder)
        model = cls(cls.build_config_from_yaml(params["model"]))
        model.load_from_lingua_state(state)
        return cast_and_place(model, loading.get("dtype"), loading.get("device_map"))
