"""GLA5, GDN2 and Mamba2 with Canon layers for Hugging Face (also usable as flat remote-code files)."""

from .configuration_gated_deltanet_canon import GatedDeltaNetCanonConfig
from .configuration_gla_canon import GLACanonConfig
from .configuration_mamba2_canon import Mamba2CanonConfig
from .linear_common import LinearCanonCache
from .modeling_gated_deltanet_canon import (
    GatedDeltaNetCanonForCausalLM,
    GatedDeltaNetCanonModel,
    GatedDeltaNetCanonPreTrainedModel,
)
from .modeling_gla_canon import GLACanonForCausalLM, GLACanonModel, GLACanonPreTrainedModel
from .modeling_mamba2_canon import Mamba2CanonForCausalLM, Mamba2CanonModel, Mamba2CanonPreTrainedModel

__all__ = [
    "GLACanonConfig",
    "GLACanonForCausalLM",
    "GLACanonModel",
    "GLACanonPreTrainedModel",
    "GatedDeltaNetCanonConfig",
    "GatedDeltaNetCanonForCausalLM",
    "GatedDeltaNetCanonModel",
    "GatedDeltaNetCanonPreTrainedModel",
    "LinearCanonCache",
    "Mamba2CanonConfig",
    "Mamba2CanonForCausalLM",
    "Mamba2CanonModel",
    "Mamba2CanonPreTrainedModel",
]
