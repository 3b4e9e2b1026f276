"""The bridge between Lingua's LlamaCanon checkpoints and `LlamaCanonForCausalLM`: parameter names, the RoPE layout
permutation and params.json -> config. The folders themselves (finding, reading, the Hub) are `lingua_checkpoint.py`.

Lingua names its parameters `tok_embeddings`, `layers.i.attention.wq`, `layers.i.feed_forward.w1`, ...; they map one
to one onto ours. Lingua rotates interleaved coordinate pairs (2j, 2j+1) of each head, the Hugging Face convention
pairs (j, j + R/2): a model with rope_version="lingua" takes the tensors as they are, and with "huggingface" the q/k
rows (and q_norm, k_norm and Canon-B's q/k channels) are permuted per head, which gives identical logits.
"""

import torch

from .configuration_llama_canon import LlamaCanonConfig
from .layers import mlp_width

LINGUA_TOP_LEVEL = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LINGUA_LAYER_PARTS = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "attention.q_norm": "self_attn.q_norm",
    "attention.k_norm": "self_attn.k_norm",
    "attention.canonB": "self_attn.canonB",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.canonD": "mlp.canonD",
    "canonA": "canonA",
    "canonC": "canonC",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
LINGUA_TIED_OUTPUT = "output.tied_module.weight"


def lingua_key_to_hf(key):
    """The HF name of a Lingua parameter, or None when it has no counterpart."""
    if key in LINGUA_TOP_LEVEL:
        return LINGUA_TOP_LEVEL[key]
    parts = key.split(".")
    if len(parts) >= 4 and parts[0] == "layers" and parts[1].isdigit():
        module, leaf = ".".join(parts[2:-1]), parts[-1]
        if module in LINGUA_LAYER_PARTS:
            return f"model.layers.{parts[1]}.{LINGUA_LAYER_PARTS[module]}.{leaf}"
    return None


def rope_layout_permutation(head_dim, rotary_dim):
    """Index p with hf_head = lingua_head[p]: interleaved pairs (2j, 2j+1) -> rotate-half pairs (j, j + R/2)."""
    return list(range(0, rotary_dim, 2)) + list(range(1, rotary_dim, 2)) + list(range(rotary_dim, head_dim))


def _permute_heads(tensor, num_heads, perm):
    """Reorder dim 0 of a [num_heads * head_dim, ...] tensor within every head."""
    head_dim = len(perm)
    heads = tensor.reshape(num_heads, head_dim, *tensor.shape[1:])
    return heads[:, perm].reshape(tensor.shape)


def lingua_to_hf_rope_layout(state_dict, config):
    """Permute HF-named q/k tensors of a Lingua-layout state dict into the rotate-half layout (in a new dict)."""
    perm = torch.tensor(rope_layout_permutation(config.head_dim, config.rotary_dim))
    H, KV, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    out = dict(state_dict)
    for key, tensor in state_dict.items():
        if key.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.q_norm.weight")):
            out[key] = _permute_heads(tensor, H, perm)
        elif key.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.k_norm.weight")):
            out[key] = _permute_heads(tensor, KV, perm)
        elif key.endswith("self_attn.canonB.weight"):
            q, k, v = tensor.split((H * hd, KV * hd, KV * hd), dim=0)
            out[key] = torch.cat((_permute_heads(q, H, perm), _permute_heads(k, KV, perm), v), dim=0)
    return out


def lingua_state_to_hf(state_dict, config):
    """Rename a Lingua state dict to HF names (and permute for rope_version='huggingface').

    Returns (mapped, unexpected_keys)."""
    mapped, unexpected = {}, []
    for key, tensor in state_dict.items():
        if key == LINGUA_TIED_OUTPUT and config.tie_word_embeddings:
            continue
        hf_key = lingua_key_to_hf(key)
        if hf_key is None:
            unexpected.append(key)
        else:
            mapped[hf_key] = tensor
    if config.rope_version == "huggingface":
        mapped = lingua_to_hf_rope_layout(mapped, config)
    return mapped, sorted(unexpected)


def _special_token_ids(tokenizer, vocab_size):
    """(BOS, EOS) of the trainer's tokenizer `tokenizer` (the data.tokenizer section) for a model of `vocab_size`."""
    name = tokenizer.get("name")
    if name == "tiktoken":
        return vocab_size - 256, vocab_size - 255
    if name == "bytes":
        return 256, 257
    if name == "tokens":  # pre-tokenized ids: the trainer reserves the two highest ids of its vocabulary
        words = tokenizer.get("vocab_size", vocab_size)
        return words - 1, words - 2
    if name == "mock":
        return None, None
    return 1, 2  # SentencePiece Llama-2 ids


def config_from_lingua_params(params, **overrides):
    """A LlamaCanonConfig (rope_version 'lingua') from a Lingua params.json dict; overrides win."""
    if "model" not in params:
        raise ValueError(f"params.json has no 'model' section (keys: {sorted(params)}); expected a Lingua dump")
    m = params["model"]
    data = params.get("data") or {}
    dim, n_layers = m["dim"], m["n_layers"]
    head_dim = m.get("head_dim")
    n_heads = m.get("n_heads") or dim // head_dim
    head_dim = head_dim or dim // n_heads
    bos, eos = _special_token_ids(data.get("tokenizer") or {}, m["vocab_size"])
    fields = dict(
        vocab_size=m["vocab_size"],
        hidden_size=dim,
        intermediate_size=mlp_width(
            dim, m.get("hidden_dim"), multiplier=m.get("ffn_dim_multiplier"), multiple_of=m.get("multiple_of", 256)
        ),
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=m.get("n_kv_heads") or n_heads,
        head_dim=head_dim,
        rms_norm_eps=m.get("norm_eps", 1e-5),
        rope_theta=m.get("rope_theta", 10000.0),
        rope_dim=m.get("rope_dim"),
        qk_norm=m.get("qk_norm", False),
        canon_set=m.get("canon_set", ""),
        canon_kernel=m.get("canon_kernel", 4),
        canon_residual=m.get("canon_residual", True),
        canon_activation=m.get("canon_activation", False),
        canon_bias=m.get("canon_bias", False),
        tie_word_embeddings=m.get("weight_tying", False),
        max_position_embeddings=data.get("seq_len") or m.get("max_seqlen", 4096),
        bos_token_id=bos,
        eos_token_id=eos,
        rope_version="lingua",
    )
    fields.update(overrides)
    return LlamaCanonConfig(**fields)
