import pytest
import torch

from huggingface import LlamaCanonConfig, LlamaCanonForCausalLM

VOCAB = 61


def tiny_config(**overrides):
    """A 2-layer GQA model small enough for exhaustive equivalence checks."""
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        initializer_range=0.3,  # spread-out logits: greedy/beam choices are far from ties
    )
    fields.update(overrides)
    return LlamaCanonConfig(**fields)


def tiny_model(seed=0, attn_implementation="sdpa", **overrides):
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    config._attn_implementation = attn_implementation
    model = LlamaCanonForCausalLM(config).eval()
    # norms start at 1 and biases at 0; perturb them so tests also see their values (and their layout) at work
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            elif name.endswith("proj.bias"):
                param.copy_(torch.randn_like(param))
        # the pad token's embedding row starts at zero; give it values so that unmasked padding would show
        model.get_input_embeddings().weight[config.pad_token_id].normal_()
    return model


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def make_config():
    return tiny_config
