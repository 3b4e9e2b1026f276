"""Configuration of Mamba2Canon: Mamba2 with Canon layers and an optional gated MLP per block."""

import math

from .canon_fields import auto_map, check_choice, check_divisible, set_canon_fields
from .transformers_compat import PreTrainedConfig


class Mamba2CanonConfig(PreTrainedConfig):
    """Every field and default of the published configs: their `*_model_HF.json` files load unchanged.

    `mlp_type="mlp10"` adds a gated MLP of width `intermediate_size` (None: 2 * hidden_size) after the mixer; without
    it the blocks are plain Mamba2. `noconv1d=True` replaces the mixer's short convolution by the identity (the
    recipes' variants all keep it). `time_step_rank`, `time_step_min/max/floor` and `rms_norm` only shape the
    initialisation or are unused, as in the published models; extra keys such as `norm_eps` are stored and ignored.
    """

    model_type = "Mamba2Canon"

    def __init__(
        self,
        num_heads=128,
        head_dim=64,
        vocab_size=32768,
        hidden_size=4096,
        state_size=128,
        num_hidden_layers=64,
        layer_norm_epsilon=1e-5,
        pad_token_id=None,
        bos_token_id=0,
        eos_token_id=2,
        expand=2,
        conv_kernel=4,
        n_groups=8,
        use_bias=False,
        use_conv_bias=True,
        hidden_act="silu",
        initializer_range=0.1,
        residual_in_fp32=True,
        time_step_rank="auto",
        time_step_min=0.001,
        time_step_max=0.1,
        time_step_floor=1e-4,
        time_step_limit=(0.0, float("inf")),
        rescale_prenorm_residual=False,
        use_cache=True,
        rms_norm=True,
        chunk_size=256,
        tie_word_embeddings=False,
        intermediate_size=None,
        **kwargs,
    ):
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.state_size = state_size
        self.num_hidden_layers = num_hidden_layers
        self.layer_norm_epsilon = layer_norm_epsilon
        self.expand = expand
        self.conv_kernel = conv_kernel
        self.n_groups = n_groups
        self.use_bias = use_bias
        self.use_conv_bias = use_conv_bias
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.residual_in_fp32 = residual_in_fp32
        self.time_step_rank = math.ceil(hidden_size / 16) if time_step_rank == "auto" else time_step_rank
        self.time_step_min = time_step_min
        self.time_step_max = time_step_max
        self.time_step_floor = time_step_floor
        self.time_step_limit = tuple(time_step_limit)  # a saved config gives a list back
        self.rescale_prenorm_residual = rescale_prenorm_residual
        self.use_cache = use_cache
        self.rms_norm = rms_norm
        self.chunk_size = chunk_size
        self.intermediate_size = intermediate_size
        set_canon_fields(self, kwargs)
        self.noconv1d = kwargs.pop("noconv1d", False)
        self.mlp_type = kwargs.pop("mlp_type", None)
        self._validate()
        kwargs.setdefault("auto_map", auto_map("mamba2_canon", "Mamba2Canon"))
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def to_dict(self):
        out = super().to_dict()
        # JSON has no tuples: the saved form is a list on every transformers release (5.x converts it itself)
        out["time_step_limit"] = list(self.time_step_limit)
        return out

    @property
    def ssm_width(self) -> int:
        """I = expand * hidden_size = num_heads * head_dim."""
        return int(self.expand * self.hidden_size)

    @property
    def mlp_width(self) -> int:
        return self.intermediate_size if self.intermediate_size is not None else 2 * self.hidden_size

    def _validate(self):
        if self.num_heads * self.head_dim != self.ssm_width:
            raise ValueError(
                f"num_heads * head_dim = {self.num_heads * self.head_dim} must equal expand * hidden_size = "
                f"{self.ssm_width}"
            )
        check_divisible("num_heads", self.num_heads, "n_groups", self.n_groups)
        check_choice("hidden_act", self.hidden_act, ("silu", "swish"))
        check_choice("mlp_type", self.mlp_type, (None, "mlp10"))
        check_choice("rescale_prenorm_residual", self.rescale_prenorm_residual, (False,))
        if self.noconv1d and self.use_conv_bias:
            raise ValueError("noconv1d=True replaces the conv by the identity; it needs use_conv_bias=False")


__all__ = ["Mamba2CanonConfig"]
