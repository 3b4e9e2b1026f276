"""Build LlamaCanon-1B from scratch and check it: parameter count and Canon initialisation.

    python -m huggingface.demo_newmodel

The full model is built on the meta device (no memory, no time) to count parameters; one decoder layer is built for
real to show that Canon weights keep PyTorch's default conv init (uniform +-1/sqrt(K), std ~0.289 at K=4) rather
than the 0.02 normal init of the linear layers. Models trained natively in Hugging Face use
rope_version="huggingface"; checkpoints from Lingua need "lingua" (or `convert_lingua_to_hf`).
"""

import torch

from .configuration_llama_canon import LlamaCanonConfig
from .modeling_llama_canon import LlamaCanonDecoderLayer, LlamaCanonForCausalLM


def canon_1b_config(**overrides):
    """The LlamaCanon-1B-Nemo recipes' architecture (rope_dim = head_dim / 4, QK-norm, Canon ABCD)."""
    fields = dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=24,
        num_attention_heads=32,
        num_key_value_heads=32,
        qk_norm=True,
        rope_dim=16,
        canon_set="ABCD",
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=4096,
        rope_version="huggingface",
    )
    fields.update(overrides)
    return LlamaCanonConfig(**fields)


def main():
    config = canon_1b_config()
    with torch.device("meta"):
        model = LlamaCanonForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    embeddings = 2 * config.vocab_size * config.hidden_size
    canon = sum(p.numel() for n, p in model.named_parameters() if ".canon" in n)
    print(f"LlamaCanon-1B: {total:,} parameters ({total / 1e9:.3f}B), non-embedding {total - embeddings:,}")
    print(f"Canon layers: {canon:,} parameters ({canon // config.num_hidden_layers:,} per layer)")
    print(f"partial RoPE: rope_dim={config.rope_dim} of head_dim={config.head_dim} "
          f"(partial_rotary_factor {config.partial_rotary_factor})")  # fmt: skip

    torch.manual_seed(0)
    layer = LlamaCanonDecoderLayer(config, layer_idx=0)
    for module in layer.modules():  # the model's own init, applied module by module
        model._init_weights(module)
    print("initialisation of layer 0 (expected: canon std ~0.289, linear std 0.02, norms 1):")
    for name, param in layer.named_parameters():
        print(f"  {name:32s} shape {str(tuple(param.shape)):18s} mean {param.mean():+.4f} std {param.std():.4f}")


if __name__ == "__main__":
    main()
