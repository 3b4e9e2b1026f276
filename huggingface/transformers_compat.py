"""Every difference between the transformers releases these models support (4.47 to the newest 5.x), in one place.

Each name below is settled once, at import, by checking for the feature rather than comparing version numbers, so
the model files read the same on every release:

- `CACHE_NAME`: the keyword under which `generate()` hands the decode cache to a model's forward and reads it back
  from the output. It was `past_key_values` up to 5.23 and is `cache` from 5.24 on; `pick_cache` accepts either from
  a caller, and `model_output` fills the output field the installed release defines.
- `PreTrainedConfig`, `Cache`, `DynamicCache`, `GradientCheckpointingLayer`, `init`: the installed release's
  classes, or stand-ins with the same behaviour where an old release lacks them.
- `attention_function`: the attention implementation chosen in the config (eager is the models' own).
"""

import functools
import inspect
import types

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

# ----------------------------------------------------------------------------------------------------------------
# The cache keyword
# ----------------------------------------------------------------------------------------------------------------

CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def pick_cache(cache, past_key_values):
    """The cache a caller passed, under either name (older callers and releases say `past_key_values`)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("got two different caches, as `cache` and as `past_key_values`; pass one")
    return cache if cache is not None else past_key_values


def model_output(output_class, cache, config, return_dict, **fields):
    """An output of `output_class` whose cache field (named as this release names it) holds `cache`; a tuple when
    `return_dict` (or, when None, `config.return_dict`) is False, as transformers' own models do."""
    output = output_class(**{CACHE_NAME: cache}, **fields)
    return output if (config.return_dict if return_dict is None else return_dict) else output.to_tuple()


def returned_cache(outputs):
    """The cache a model output carries, whatever this release calls the field."""
    return getattr(outputs, CACHE_NAME)


def cache_keys():
    """Both spellings, for the lists of keyword names that transformers consults (device placement, inference)."""
    return ["cache", "past_key_values"]


# ----------------------------------------------------------------------------------------------------------------
# Classes that moved or appeared
# ----------------------------------------------------------------------------------------------------------------

PreTrainedConfig = getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig


def init_cache_base(cache: Cache) -> None:
    """Run Cache.__init__ for a cache that keeps its own states: from 4.56 on it takes the list of layer objects
    (none here), before that nothing."""
    if "layers" in inspect.signature(Cache.__init__).parameters:
        Cache.__init__(cache, layers=[])
    else:
        Cache.__init__(cache)


try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # before 4.52: the same contract, written out

    class GradientCheckpointingLayer(nn.Module):
        """A decoder layer that `gradient_checkpointing_enable()` switches to recomputation in training."""

        gradient_checkpointing = False

        def __call__(self, *args, **kwargs):
            if self.gradient_checkpointing and self.training:
                return self._gradient_checkpointing_func(functools.partial(super().__call__, **kwargs), *args)
            return super().__call__(*args, **kwargs)


def _copy_(tensor, value):
    with torch.no_grad():
        return tensor.copy_(value)


try:
    from transformers import initialization as init  # 5.x: skips parameters that were loaded from a checkpoint
except ImportError:  # 4.x calls _init_weights only for modules that were not loaded, so torch's functions serve
    init = types.SimpleNamespace(
        normal_=nn.init.normal_,
        uniform_=nn.init.uniform_,
        zeros_=nn.init.zeros_,
        ones_=nn.init.ones_,
        kaiming_uniform_=nn.init.kaiming_uniform_,
        copy_=_copy_,
    )

# ----------------------------------------------------------------------------------------------------------------
# Attention implementations
# ----------------------------------------------------------------------------------------------------------------


def repeat_kv(hidden_states, n_rep):
    """[B, KV, S, hd] -> [B, KV * n_rep, S, hd], each kv head repeated for its group of query heads."""
    if n_rep == 1:
        return hidden_states
    B, KV, S, hd = hidden_states.shape
    return hidden_states[:, :, None].expand(B, KV, n_rep, S, hd).reshape(B, KV * n_rep, S, hd)


def _sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """torch's scaled_dot_product_attention with the attention interface's signature (releases before 4.48)."""
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    is_causal = attention_mask is None and query.shape[2] > 1
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=is_causal
    )
    return out.transpose(1, 2).contiguous(), None


try:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
except ImportError:
    ALL_ATTENTION_FUNCTIONS = {"sdpa": _sdpa_attention}


def attention_function(implementation, eager):
    """The attention function for `config._attn_implementation` (`eager` is the model's own)."""
    if implementation in (None, "eager"):
        return eager if implementation == "eager" else ALL_ATTENTION_FUNCTIONS["sdpa"]
    if implementation not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(
            f"attn_implementation={implementation!r} is not available with transformers {transformers.__version__}; "
            f"expected one of {sorted(set(ALL_ATTENTION_FUNCTIONS) | {'eager'})}"
        )
    return ALL_ATTENTION_FUNCTIONS[implementation]


__all__ = [
    "ALL_ATTENTION_FUNCTIONS",
    "CACHE_NAME",
    "Cache",
    "DynamicCache",
    "GradientCheckpointingLayer",
    "PreTrainedConfig",
    "attention_function",
    "cache_keys",
    "init",
    "init_cache_base",
    "model_output",
    "pick_cache",
    "repeat_kv",
    "returned_cache",
]
