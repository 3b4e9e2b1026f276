"""Configuration of LlamaCanon: a Llama decoder with Canon layers, QK-norm and partial RoPE."""

from .transformers_compat import PreTrainedConfig, cache_keys

CANON_SITES = "ABCD"
ROPE_VERSIONS = ("huggingface", "lingua")


class LlamaCanonConfig(PreTrainedConfig):
    """Llama fields (transformers' defaults) plus the Canon, QK-norm and RoPE-layout switches.

    `rope_dim` is the single source of truth for partial RoPE: `partial_rotary_factor` is derived from it
    (a saved value of `partial_rotary_factor` is accepted on load only when it agrees).
    """

    model_type = "LlamaCanon"
    keys_to_ignore_at_inference = cache_keys()
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    def __init__(
        self,
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=None,
        hidden_act="silu",
        max_position_embeddings=2048,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        pad_token_id=None,
        bos_token_id=1,
        eos_token_id=2,
        pretraining_tp=1,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        rope_scaling=None,
        attention_bias=False,
        attention_dropout=0.0,
        mlp_bias=False,
        head_dim=None,
        rope_version="huggingface",
        canon_set="",
        canon_bias=False,
        canon_activation=False,
        canon_kernel=4,
        canon_residual=True,
        qk_norm=False,
        rope_dim=None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size if intermediate_size is not None else hidden_size * 8 // 3
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.pretraining_tp = pretraining_tp
        self.rope_theta = rope_theta
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self.rope_version = rope_version
        self.canon_set = canon_set
        self.canon_bias = canon_bias
        self.canon_activation = canon_activation
        self.canon_kernel = canon_kernel
        self.canon_residual = canon_residual
        self.qk_norm = qk_norm

        saved_factor = kwargs.pop("partial_rotary_factor", None)
        if rope_dim is None and saved_factor is not None and saved_factor != 1.0:
            rope_dim = int(round(self.head_dim * saved_factor))
        self.rope_dim = rope_dim
        if rope_scaling is not None:
            raise ValueError(f"rope_scaling={rope_scaling!r} is not supported; LlamaCanon uses plain RoPE (None)")
        self._validate()
        if saved_factor is not None and abs(saved_factor - self.partial_rotary_factor) > 1e-9:
            raise ValueError(
                f"partial_rotary_factor={saved_factor} disagrees with rope_dim={rope_dim} and head_dim={self.head_dim} "
                f"(expected {self.partial_rotary_factor}); set rope_dim only"
            )

        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_llama_canon.LlamaCanonConfig",
                "AutoModel": "modeling_llama_canon.LlamaCanonModel",
                "AutoModelForCausalLM": "modeling_llama_canon.LlamaCanonForCausalLM",
            },
        )
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def partial_rotary_factor(self) -> float:
        """Fraction of each head's dimensions that RoPE rotates (derived from `rope_dim`)."""
        return 1.0 if self.rope_dim is None else self.rope_dim / self.head_dim

    @property
    def rotary_dim(self) -> int:
        return self.head_dim if self.rope_dim is None else self.rope_dim

    def _validate(self):
        unknown = sorted(set(self.canon_set) - set(CANON_SITES))
        if unknown:
            raise ValueError(
                f"canon_set={self.canon_set!r} contains {''.join(unknown)!r}; "
                "expected a string of the letters A, B, C, D"
            )
        if not isinstance(self.canon_kernel, int) or self.canon_kernel < 1:
            raise ValueError(f"canon_kernel={self.canon_kernel!r}; expected an integer >= 1")
        if self.rope_version not in ROPE_VERSIONS:
            raise ValueError(f"rope_version={self.rope_version!r}; expected one of {ROPE_VERSIONS}")
        rope_dim = self.rope_dim
        if rope_dim is not None and (
            not isinstance(rope_dim, int) or rope_dim <= 0 or rope_dim % 2 or rope_dim > self.head_dim
        ):
            raise ValueError(
                f"rope_dim={self.rope_dim!r}; expected an even integer in [2, head_dim={self.head_dim}] or None"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads={self.num_key_value_heads} must divide "
                f"num_attention_heads={self.num_attention_heads}"
            )


__all__ = ["LlamaCanonConfig"]
