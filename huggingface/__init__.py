"""LlamaCanon for Hugging Face transformers (also usable as flat remote-code files)."""

from .canon import ShortConvolution
from .configuration_llama_canon import LlamaCanonConfig
from .modeling_llama_canon import CanonCache, LlamaCanonForCausalLM, LlamaCanonModel, LlamaCanonPreTrainedModel

__all__ = [
    "CanonCache",
    "LlamaCanonConfig",
    "LlamaCanonForCausalLM",
    "LlamaCanonModel",
    "LlamaCanonPreTrainedModel",
    "ShortConvolution",
]
