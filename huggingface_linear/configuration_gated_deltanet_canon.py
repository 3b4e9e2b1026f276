"""Configuration of GatedDeltaNetCanon: Gated DeltaNet with Canon layers ("GDN2" in the recipes)."""

from .canon_fields import auto_map, check_choice, set_canon_fields
from .transformers_compat import PreTrainedConfig, cache_keys

ATTN_MODES = ("chunk", "fused_recurrent")  # one computation here; kept for config compatibility


class GatedDeltaNetCanonConfig(PreTrainedConfig):
    """Every field and default of the published configs: their `*_model_HF.json` files load unchanged.

    An optional `mlp_type="mlp10"` (an extra attribute of the published configs) makes the MLP width 2 * hidden_size.
    Stored for compatibility only: attn_mode, max_position_embeddings, fuse_swiglu, fuse_cross_entropy.
    """

    model_type = "GatedDeltaNetCanon"
    keys_to_ignore_at_inference = cache_keys()

    def __init__(
        self,
        attn_mode="chunk",
        hidden_size=2048,
        expand_v=2,
        use_gate=True,
        output_gate_rank=None,
        use_short_conv=True,
        conv_size=4,
        head_dim=256,
        num_heads=6,
        max_position_embeddings=2048,
        hidden_ratio=4,
        intermediate_size=None,
        hidden_act="swish",
        num_hidden_layers=21,
        norm_eps=1e-6,
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
        vocab_size=32000,
        **kwargs,
    ):
        self.attn_mode = attn_mode
        self.hidden_size = hidden_size
        self.expand_v = expand_v
        self.use_gate = use_gate
        self.output_gate_rank = output_gate_rank
        self.use_short_conv = use_short_conv
        self.conv_size = conv_size
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.max_position_embeddings = max_position_embeddings
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.num_hidden_layers = num_hidden_layers
        self.norm_eps = norm_eps
        self.attn = attn
        self.use_cache = use_cache
        self.initializer_range = initializer_range
        self.zeyuan_split_init = zeyuan_split_init
        self.zeyuan_layernorm = zeyuan_layernorm
        self.fuse_norm = fuse_norm
        self.fuse_swiglu = fuse_swiglu
        self.fuse_cross_entropy = fuse_cross_entropy
        self.vocab_size = vocab_size
        set_canon_fields(self, kwargs)
        self._validate()
        kwargs.setdefault("auto_map", auto_map("gated_deltanet_canon", "GatedDeltaNetCanon"))
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def head_v_dim(self) -> int:
        return int(self.head_dim * self.expand_v)

    def _validate(self):
        if self.attn is not None:
            raise ValueError(f"attn={self.attn!r}: hybrid attention layers are not supported; expected None")
        check_choice("hidden_act", self.hidden_act, ("swish",))
        check_choice("attn_mode", self.attn_mode, ATTN_MODES)


__all__ = ["GatedDeltaNetCanonConfig"]
