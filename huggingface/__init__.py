"""LlamaCanon for Hugging Face transformers (also usable as flat remote-code files)."""

from .canon_helper import CanonCache, ShortConvolution
from .configuration_llama_canon import LlamaCanonConfig
from .modeling_llama_canon import LlamaCanonForCausalLM, LlamaCanonModel, LlamaCanonPreTrainedModel

__all__ = [
    "CanonCache",
    "LlamaCanonConfig",
    "LlamaCanonForCausalLM",
    "LlamaCanonModel",
    "LlamaCanonPreTrainedModel",
    "ShortConvolution",
]
