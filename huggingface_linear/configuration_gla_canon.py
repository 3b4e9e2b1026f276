"""Configuration of GLACanon: gated linear attention (GLA) with Canon layers ("GLA5" in the recipes)."""

from .canon_fields import auto_map, check_choice, check_divisible, set_canon_fields
from .transformers_compat import PreTrainedConfig, cache_keys

ATTN_MODES = ("chunk", "fused_recurrent", "fused_chunk")  # one computation here; kept for config compatibility


class GLACanonConfig(PreTrainedConfig):
    """Every field and default of the published configs: their `*_model_HF.json` files load unchanged.

    Read by the model: sizes, expand_k/expand_v, num_heads, feature_map, use_short_conv/conv_size, use_output_gate,
    output_gate_rank, clamp_min, norm_eps, initializer_range, zeyuan_split_init, zeyuan_layernorm, fuse_norm (key
    names only), canon_*. Stored for compatibility only: attn_mode, use_gk, use_gv, use_l2warp, fuse_swiglu,
    fuse_cross_entropy, max_position_embeddings, elementwise_affine (must stay True), hidden_ratio when
    intermediate_size is given.
    """

    model_type = "GLACanon"
    keys_to_ignore_at_inference = cache_keys()

    def __init__(
        self,
        hidden_size=2048,
        expand_k=0.5,
        expand_v=1.0,
        hidden_ratio=4,
        intermediate_size=None,
        num_hidden_layers=24,
        num_heads=4,
        num_kv_heads=None,
        feature_map=None,
        attn_mode="chunk",
        use_short_conv=False,
        conv_size=4,
        use_output_gate=True,
        output_gate_rank=None,
        clamp_min=None,
        hidden_act="swish",
        max_position_embeddings=2048,
        elementwise_affine=True,
        norm_eps=1e-6,
        use_gk=True,
        use_gv=False,
        attn=None,
        use_cache=True,
        pad_token_id=None,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        initializer_range=0.02,
        zeyuan_split_init=False,
        zeyuan_layernorm=False,
        fuse_norm=True,
        fuse_swiglu=True,
        fuse_cross_entropy=True,
        use_l2warp=False,
        vocab_size=32000,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.expand_k = expand_k
        self.expand_v = expand_v
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.feature_map = feature_map
        self.attn_mode = attn_mode
        self.use_short_conv = use_short_conv
        self.conv_size = conv_size
        self.use_output_gate = use_output_gate
        self.output_gate_rank = output_gate_rank
        self.clamp_min = clamp_min
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.elementwise_affine = elementwise_affine
        self.norm_eps = norm_eps
        self.use_gk = use_gk
        self.use_gv = use_gv
        self.attn = attn
        self.use_cache = use_cache
        self.initializer_range = initializer_range
        self.zeyuan_split_init = zeyuan_split_init
        self.zeyuan_layernorm = zeyuan_layernorm
        self.fuse_norm = fuse_norm
        self.fuse_swiglu = fuse_swiglu
        self.fuse_cross_entropy = fuse_cross_entropy
        self.use_l2warp = use_l2warp
        self.vocab_size = vocab_size
        set_canon_fields(self, kwargs)
        self._validate()
        kwargs.setdefault("auto_map", auto_map("gla_canon", "GLACanon"))
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def key_dim(self) -> int:
        return int(self.hidden_size * self.expand_k)

    @property
    def value_dim(self) -> int:
        return int(self.hidden_size * self.expand_v)

    def _validate(self):
        if self.attn is not None:
            raise ValueError(f"attn={self.attn!r}: hybrid attention layers are not supported; expected None")
        if self.num_kv_heads not in (None, self.num_heads):
            raise ValueError(f"num_kv_heads={self.num_kv_heads} is not supported; expected None or num_heads")
        check_choice("hidden_act", self.hidden_act, ("swish", "silu"))
        check_choice("attn_mode", self.attn_mode, ATTN_MODES)
        check_choice("elementwise_affine", self.elementwise_affine, (True,))
        check_divisible("hidden_size * expand_k", self.key_dim, "num_heads", self.num_heads)
        check_divisible("hidden_size * expand_v", self.value_dim, "num_heads", self.num_heads)


__all__ = ["GLACanonConfig"]
