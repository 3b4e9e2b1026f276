import pytest
import torch

from huggingface_linear import (
    GatedDeltaNetCanonConfig,
    GatedDeltaNetCanonForCausalLM,
    GLACanonConfig,
    GLACanonForCausalLM,
    Mamba2CanonConfig,
    Mamba2CanonForCausalLM,
)

VOCAB = 37


def tiny_config(arch, canon_set="AbbCD", **overrides):
    """Two-layer models with every option of the recipes, small enough for exhaustive equivalence checks. The
    original short conv follows "b" in canon_set, as the recipe builders set it."""
    has_b = "b" in canon_set
    if arch == "gla":
        fields = dict(hidden_size=16, expand_k=1, expand_v=2, num_heads=2, intermediate_size=24, use_short_conv=has_b,
                      output_gate_rank=4, zeyuan_split_init=True, initializer_range=0.3, norm_eps=1e-5)  # fmt: skip
        config_class = GLACanonConfig
    elif arch == "gdn":
        fields = dict(hidden_size=16, head_dim=8, num_heads=2, intermediate_size=24, use_short_conv=has_b,
                      output_gate_rank=4, zeyuan_split_init=True, initializer_range=0.3, norm_eps=1e-5)  # fmt: skip
        config_class = GatedDeltaNetCanonConfig
    else:
        fields = dict(hidden_size=16, head_dim=8, num_heads=4, state_size=4, n_groups=1, mlp_type="mlp10",
                      noconv1d=not has_b, use_conv_bias=has_b, residual_in_fp32=False,
                      initializer_range=1.0)  # fmt: skip
        config_class = Mamba2CanonConfig
    fields.update(num_hidden_layers=2, vocab_size=VOCAB, canon_set=canon_set, bos_token_id=1, eos_token_id=2)
    fields.update(overrides)
    return config_class(**fields)


MODEL_CLASSES = {"gla": GLACanonForCausalLM, "gdn": GatedDeltaNetCanonForCausalLM, "mamba2": Mamba2CanonForCausalLM}
ARCHS = list(MODEL_CLASSES)


def tiny_model(arch, canon_set="AbbCD", seed=0, **overrides):
    torch.manual_seed(seed)
    model = MODEL_CLASSES[arch](tiny_config(arch, canon_set, **overrides)).eval()
    # norms start at 1 and biases at 0: perturb them so the tests also see those weights at work
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
        if model.config.pad_token_id is not None:  # its embedding row starts at zero: unmasked padding must show
            model.get_input_embeddings().weight[model.config.pad_token_id].normal_()
    return model


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def make_config():
    return tiny_config
