"""LlamaCanon for Hugging Face transformers: Llama with Canon layers (sites A/B/C/D), QK-norm and partial RoPE.

Read top to bottom: RoPE, the joint projection, MLP (Canon-D), attention (Canon-B), decoder layer (Canon-A/C), the
cache, the base model and the causal LM head, which also loads Lingua checkpoints (`load_from_lingua_state`, Lingua
folders in `from_pretrained`; names, layouts and configs are translated by `lingua_bridge.py`). Canon conv states live
in `CanonCache`, which `generate()` receives instead of a plain DynamicCache. RMSNorm, the causal mask and the weight
init are the shared ones of `layers.py`.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from .canon import ShortConvolution, canon_call, canon_glu, create_canon, init_canon, map_states, norm_then_canon
from .configuration_llama_canon import LlamaCanonConfig
from .layers import RMSNorm, causal_mask, init_normal, joint_projection, upcast
from .lingua_bridge import config_from_lingua_params, lingua_state_to_hf
from .lingua_checkpoint import (
    cast_and_place,
    find_lingua_folder,
    load_checked,
    pop_loading_keywords,
    read_lingua_folder,
)
from .transformers_compat import (
    CACHE_NAME,
    DynamicCache,
    GradientCheckpointingLayer,
    attention_function,
    cache_keys,
    init,
    model_output,
    pick_cache,
    repeat_kv,
    returned_cache,
)

# ----------------------------------------------------------------------------------------------------------------
# Rotary embeddings
# ----------------------------------------------------------------------------------------------------------------


class LlamaCanonRotaryEmbedding(nn.Module):
    """cos/sin [B, T, R] for the first R = rope_dim (or head_dim) coordinates of every head.

    Frequencies are theta^(-2j/R) in fp32, computed once per device and kept outside the state (no buffer to
    re-materialise after meta-device loading); the layout is rotate-half's (frequencies repeated twice).
    """

    def __init__(self, config: LlamaCanonConfig):
        super().__init__()
        self.rotary_dim = config.rotary_dim
        self.theta = config.rope_theta
        self._inv_freq = {}

    def inv_freq(self, device):
        if device not in self._inv_freq:
            exponents = torch.arange(0, self.rotary_dim, 2, device=device, dtype=torch.float32) / self.rotary_dim
            self._inv_freq[device] = 1.0 / (self.theta**exponents)
        return self._inv_freq[device]

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq = self.inv_freq(x.device)
        freqs = position_ids[..., None].to(inv_freq.dtype) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate(x, cos, sin, rope_version):
    if rope_version == "huggingface":
        return x * cos + rotate_half(x) * sin
    # lingua / Meta Llama layout: coordinates (2j, 2j+1) form pair j; computed in fp32 like Lingua
    half = cos.shape[-1] // 2
    cos, sin = upcast(cos[..., :half]), upcast(sin[..., :half])
    pairs = upcast(x).unflatten(-1, (half, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1, rope_version="huggingface"):
    """Rotate the first R = cos.shape[-1] coordinates of each q/k head; the rest pass through unchanged."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    R = cos.shape[-1]
    if R == q.shape[-1]:
        return _rotate(q, cos, sin, rope_version), _rotate(k, cos, sin, rope_version)
    q_rot = torch.cat((_rotate(q[..., :R], cos, sin, rope_version), q[..., R:]), dim=-1)
    k_rot = torch.cat((_rotate(k[..., :R], cos, sin, rope_version), k[..., R:]), dim=-1)
    return q_rot, k_rot


# ----------------------------------------------------------------------------------------------------------------
# MLP with Canon-D
# ----------------------------------------------------------------------------------------------------------------


class LlamaCanonMLP(nn.Module):
    def __init__(self, config: LlamaCanonConfig, layer_idx: int = 0):
        super().__init__()
        self.layer_idx = layer_idx
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]
        # SiLU is left to canon.py, which fuses it with Canon-D in training; other activations run as given
        self.gate_activation = None if config.hidden_act in ("silu", "swish") else self.act_fn
        if "D" in config.canon_set:
            self.canonD = create_canon(2 * config.intermediate_size, config)

    def forward(self, x, canon_mask=None, cache=None):
        gate_up = joint_projection(x, (self.gate_proj, self.up_proj), cache)
        canon, key = getattr(self, "canonD", None), (self.layer_idx, "canonD")
        return self.down_proj(canon_glu(gate_up, self.gate_activation, canon, cache, key, canon_mask))


# ----------------------------------------------------------------------------------------------------------------
# Attention with QK-norm and Canon-B
# ----------------------------------------------------------------------------------------------------------------


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class LlamaCanonAttention(nn.Module):
    def __init__(self, config: LlamaCanonConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        q_width, kv_width = self.num_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        self.split_sizes = (q_width, kv_width, kv_width)
        self.q_proj = nn.Linear(config.hidden_size, q_width, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_width, config.hidden_size, bias=config.attention_bias)
        if config.qk_norm:
            # one RMS statistic over all heads jointly, as in Lingua
            self.q_norm = RMSNorm(q_width, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(kv_width, eps=config.rms_norm_eps)
        if "B" in config.canon_set:
            self.canonB = create_canon(sum(self.split_sizes), config)

    def forward(
        self,
        hidden_states,
        position_embeddings,
        attention_mask=None,
        canon_mask=None,
        cache=None,
        output_attentions=False,
        **kwargs,
    ):
        B, T, _ = hidden_states.shape
        qkv = joint_projection(hidden_states, (self.q_proj, self.k_proj, self.v_proj), cache)
        if self.config.qk_norm:
            qkv = self.normalize_qk(qkv)
        qkv = canon_call(getattr(self, "canonB", None), qkv, cache, (self.layer_idx, "canonB"), canon_mask)
        q, k, v = qkv.split(self.split_sizes, dim=-1)
        q = q.reshape(B, T, -1, self.head_dim).transpose(1, 2)
        k = k.reshape(B, T, -1, self.head_dim).transpose(1, 2)
        v = v.reshape(B, T, -1, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin, rope_version=self.config.rope_version)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        # attention weights exist only in the eager computation, so a call that asks for them runs it
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = attention_function(implementation, eager_attention_forward)
        out, weights = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(out.reshape(B, T, -1).contiguous()), weights

    def normalize_qk(self, qkv):
        """[q_norm(q) | k_norm(k) | v]."""
        q, k, v = qkv.split(self.split_sizes, dim=-1)
        return torch.cat((self.q_norm(q), self.k_norm(k), v), dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# Decoder layer with Canon-A and Canon-C
# ----------------------------------------------------------------------------------------------------------------


class LlamaCanonDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: LlamaCanonConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.self_attn = LlamaCanonAttention(config, layer_idx)
        self.mlp = LlamaCanonMLP(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if "A" in config.canon_set:
            self.canonA = create_canon(config.hidden_size, config)
        if "C" in config.canon_set:
            self.canonC = create_canon(config.hidden_size, config)

    def _norm_then_canon(self, h, norm, site, canon_mask, cache):
        canon = getattr(self, site, None)
        return norm_then_canon(h, norm.weight, norm.eps, canon, cache, (self.layer_idx, site), canon_mask)

    def forward(
        self,
        hidden_states,
        position_embeddings=None,
        attention_mask=None,
        canon_mask=None,
        cache=None,
        **kwargs,
    ):
        """Returns (hidden_states, attention weights or None)."""
        kwargs.pop("use_cache", None)
        kwargs.pop("position_ids", None)
        n = self._norm_then_canon(hidden_states, self.input_layernorm, "canonA", canon_mask, cache)
        attn_out, attn_weights = self.self_attn(
            n,
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            canon_mask=canon_mask,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + attn_out
        m = self._norm_then_canon(hidden_states, self.post_attention_layernorm, "canonC", canon_mask, cache)
        return hidden_states + self.mlp(m, canon_mask=canon_mask, cache=cache), attn_weights


# ----------------------------------------------------------------------------------------------------------------
# Cache: keys/values plus the Canon conv states
# ----------------------------------------------------------------------------------------------------------------


class CanonCache(DynamicCache):
    """A DynamicCache that also owns the Canon conv states, one [B, K-1, C] tensor per (layer, site).

    Beam search reordering, batch repetition and selection act on the conv states together with keys and values,
    so every `generate()` mode sees consistent states. Cropping is refused while conv states exist: the last K-1
    inputs before an arbitrary earlier position are not kept.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_states: dict[tuple[int, str], torch.Tensor] = {}  # canon.py's conv_state keeps them here

    def reorder_cache(self, beam_idx: torch.LongTensor):
        super().reorder_cache(beam_idx)
        self.conv_states = map_states(self.conv_states, lambda s: s.index_select(0, beam_idx.to(s.device)))

    def batch_repeat_interleave(self, repeats: int):
        super().batch_repeat_interleave(repeats)
        self.conv_states = map_states(self.conv_states, lambda s: s.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor):
        super().batch_select_indices(indices)
        self.conv_states = map_states(self.conv_states, lambda s: s[indices])

    def reset(self):
        if hasattr(super(), "reset"):  # not on every transformers release's DynamicCache
            super().reset()
        self.conv_states = map_states(self.conv_states, torch.zeros_like)

    @property
    def is_croppable(self) -> bool:
        return not self.conv_states and getattr(super(), "is_croppable", True)

    def crop(self, *args, **kwargs):
        if self.conv_states:
            raise NotImplementedError(
                "CanonCache cannot be cropped once Canon conv states exist (assisted/speculative decoding is not "
                "supported); re-run the prefix instead"
            )
        super().crop(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Pretrained base, model, causal LM
# ----------------------------------------------------------------------------------------------------------------


class LlamaCanonPreTrainedModel(PreTrainedModel):
    config_class = LlamaCanonConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaCanonDecoderLayer"]
    _skip_keys_device_placement = cache_keys()
    _supports_flash_attn = True
    _supports_flash_attn_2 = True
    _supports_sdpa = True
    _supports_cache_class = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, ShortConvolution):
            init_canon(module, init)
        elif isinstance(module, nn.Linear):
            init_normal(module, std, init)
        elif isinstance(module, nn.Embedding):
            init_normal(module, std, init)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)


def _attention_mask_4d(implementation, mask_2d, batch, length, past, dtype, device):
    """The attention mask for this call, built for the attention implementation in use.

    Causal over absolute positions, minus padded keys. A padded query row still sees itself so it never becomes
    all -inf (its output is garbage but finite, and padding never feeds real tokens).
    """
    if implementation.startswith("flash_attention"):
        return mask_2d
    if mask_2d is None and (length == 1 or (past == 0 and implementation != "eager")):
        return None  # sdpa's is_causal (or no mask for a single query) is exact here
    total = past + length
    q_pos, k_pos = torch.arange(past, total, device=device), torch.arange(total, device=device)
    allowed = causal_mask(q_pos, k_pos)[None]
    if mask_2d is not None:
        allowed = (allowed & mask_2d[:, None, :].bool()) | (k_pos[None, :] == q_pos[:, None])[None]
    allowed = allowed.expand(batch, length, total)[:, None]
    if implementation == "eager":
        return torch.zeros((), dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed


class LlamaCanonModel(LlamaCanonPreTrainedModel):
    def __init__(self, config: LlamaCanonConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [LlamaCanonDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaCanonRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        past_key_values=None,
        **kwargs,
    ):
        """The decoder stack. The decode cache comes as `cache` or, as older callers name it, `past_key_values`."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("LlamaCanonModel needs exactly one of input_ids or inputs_embeds")
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        cache = pick_cache(cache, past_key_values)
        use_cache = config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if use_cache and cache is None and not self.training:
            cache = CanonCache()  # training forwards keep no cache (and use the recomputing fusions)
        if cache is not None and config.canon_set and not isinstance(cache, CanonCache):
            raise TypeError(
                f"LlamaCanon with canon_set={config.canon_set!r} keeps Canon conv states in a CanonCache; got "
                f"{type(cache).__name__}. Pass a CanonCache() as the cache or let generate() create it."
            )
        batch, length = inputs_embeds.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=inputs_embeds.device)[None]

        canon_mask = mask_2d = None
        if attention_mask is not None and attention_mask.ndim == 2:
            if attention_mask.shape != (batch, past + length):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}; expected (batch, past + new tokens) "
                    f"= {(batch, past + length)}"
                )
            if not bool(attention_mask.all()):
                mask_2d = attention_mask
                canon_mask = attention_mask[:, -length:]
        implementation = "eager" if output_attentions else (config._attn_implementation or "sdpa")
        if attention_mask is not None and attention_mask.ndim == 4:
            causal_mask = attention_mask
        else:
            causal_mask = _attention_mask_4d(
                implementation, mask_2d, batch, length, past, inputs_embeds.dtype, inputs_embeds.device
            )

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        all_hidden_states = [] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
            hidden_states, attn_weights = layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=causal_mask,
                canon_mask=canon_mask,
                cache=cache,
                output_attentions=output_attentions,
                **kwargs,
            )
            if all_attentions is not None:
                all_attentions.append(attn_weights)
        hidden_states = self.norm(hidden_states)
        if all_hidden_states is not None:
            all_hidden_states.append(hidden_states)
        return model_output(
            BaseModelOutputWithPast,
            cache if use_cache else None,
            self.config,
            return_dict,
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden_states) if all_hidden_states is not None else None,
            attentions=tuple(all_attentions) if all_attentions is not None else None,
        )


class LlamaCanonForCausalLM(LlamaCanonPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LlamaCanonConfig):
        super().__init__(config)
        self.model = LlamaCanonModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    @property
    def _is_stateful(self):
        """Canon conv states keep only the last K-1 inputs, so a cache cannot be rolled back: generate() refuses
        assisted decoding up front for such models."""
        return bool(self.config.canon_set)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        logits_to_keep=0,
        past_key_values=None,
        num_logits_to_keep=None,
        **kwargs,
    ):
        """`past_key_values` is the cache's older name, `num_logits_to_keep` (what transformers 4.45-4.49 pass) that
        of `logits_to_keep`."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=pick_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = num_logits_to_keep if num_logits_to_keep is not None else logits_to_keep
        keep = slice(-keep, None) if isinstance(keep, int) else keep
        logits = self.lm_head(hidden_states[:, keep, :])
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
            attentions=outputs.attentions,
        )

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        """generate() builds a plain DynamicCache (or, for models it takes as stateful, none); Canon models need the
        CanonCache that also holds conv states."""
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        built = model_kwargs.get(CACHE_NAME)
        if generation_config.use_cache is not False and (built is None or type(built) is DynamicCache):
            model_kwargs[CACHE_NAME] = CanonCache()

    # ------------------------------------------------------------------------------------------------------------
    # Lingua checkpoints (translated by lingua_bridge.py)
    # ------------------------------------------------------------------------------------------------------------

    def load_from_lingua_state(self, state_dict, strict=True):
        """Load the state dict of Lingua's `LMTransformer` (`tok_embeddings`, `layers.i.attention.wq`, ...).

        With `rope_version='lingua'` tensors are copied as they are; with `'huggingface'` the q/k rows (and q_norm,
        k_norm, Canon-B q/k channels) are permuted per head into the rotate-half layout, giving identical logits.
        With strict=True, missing and unexpected keys are listed in one error before anything is loaded.
        Returns (missing, unexpected).
        """
        mapped, unexpected = lingua_state_to_hf(state_dict, self.config)
        return load_checked(self, mapped, unexpected, strict)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, variant=None, **kwargs):
        """Load a Hugging Face folder/repo as usual, or a Lingua folder (`<variant>/params.json` +
        `consolidated.pth`, variant "default" unless given; a consolidated folder itself also works).

        For Lingua folders, the config is derived from params.json; keyword arguments may override config fields
        (e.g. rope_version="huggingface" to permute into the rotate-half layout), and `dtype`/`torch_dtype`,
        `device_map` (a device) and `attn_implementation` are honoured.
        """
        folder = find_lingua_folder(
            pretrained_model_name_or_path, variant, kwargs.get("local_files_only", False), kwargs.get("token")
        )
        if folder is None:
            if variant is not None:
                kwargs["variant"] = variant
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        loading = pop_loading_keywords(kwargs)
        params, state = read_lingua_folder(folder)
        config = config_from_lingua_params(params, **kwargs)
        if loading.get("attn_implementation") is not None:
            config._attn_implementation = loading["attn_implementation"]
        model = cls(config)
        model.load_from_lingua_state(state)
        return cast_and_place(model, loading.get("dtype"), loading.get("device_map"))


LlamaCanonConfig.register_for_auto_class()
LlamaCanonModel.register_for_auto_class("AutoModel")
LlamaCanonForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "LlamaCanonForCausalLM",
    "LlamaCanonModel",
    "LlamaCanonPreTrainedModel",
    "CanonCache",
    "config_from_lingua_params",
    "lingua_state_to_hf",
]
