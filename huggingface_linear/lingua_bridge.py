"""The bridge between Lingua's linear-model checkpoints and the models here: parameter names and the model section of
params.json -> config. The folders themselves (finding, reading, the Hub) are `lingua_checkpoint.py`.

The trainer (apps/gla) holds the Hugging Face model as its child `trans`, so a Lingua state dict is this model's state
dict with every name prefixed by "trans.". Its `model:` section (apps/gla's LMTransformerArgs, or the dict in
params.json) becomes the config fields of each family (GLA5, GDN2, Mamba2) here; each model class builds its config
from them in `build_config_from_yaml`. (This file imports no configuration: a saved folder holds one model's.)
"""

TRAINER_PREFIX = "trans."


def lingua_state_to_hf(state_dict: dict) -> dict:
    """A Lingua state dict under this model's names ("trans." removed)."""
    return {key.removeprefix(TRAINER_PREFIX): tensor for key, tensor in state_dict.items()}


def model_arg(args, name, default=None):
    """A field of Lingua's model args (a dataclass, an attribute object or a dict)."""
    if isinstance(args, dict):
        return args.get(name, default)
    return getattr(args, name, default)


def lingua_fields(args, family: str, exact: bool = False) -> dict:
    """The config fields every builder takes from Lingua's model args, checked: sizes, vocabulary, norm eps, weight
    tying, canon_*. `family` is the model_name prefix the builder serves (the whole name when `exact`)."""
    name = str(model_arg(args, "model_name", ""))
    if name != family if exact else not name.startswith(family):
        expected = f"exactly {family!r}" if exact else f"starting with {family!r}"
        raise ValueError(f"model_name={name!r}; this builder serves model names {expected}")
    dim, heads, vocab = model_arg(args, "dim", 512), model_arg(args, "n_heads"), model_arg(args, "vocab_size", -1)
    if not heads or dim % heads:
        raise ValueError(f"dim={dim} must be a positive multiple of n_heads={heads}")
    if vocab <= 0:
        raise ValueError(f"vocab_size={vocab}; expected a positive vocabulary size")
    return dict(
        hidden_size=dim,
        num_hidden_layers=model_arg(args, "n_layers", 8),
        num_heads=heads,
        vocab_size=vocab,
        tie_word_embeddings=model_arg(args, "weight_tying", False),
        canon_set=model_arg(args, "canon_set", ""),
        canon_bias=model_arg(args, "canon_bias", False),
        canon_activation=model_arg(args, "canon_activation", False),
        canon_kernel=model_arg(args, "canon_kernel", 4),
        canon_residual=model_arg(args, "canon_residual", True),
    )


def gla_config_fields(args) -> dict:
    """The "GLA5" config fields of a Lingua model section (`args`: LMTransformerArgs, an attribute object or a dict)."""
    fields = lingua_fields(args, "GLA5")
    return dict(
        **fields,
        norm_eps=model_arg(args, "norm_eps", 1e-5),
        use_short_conv="b" in fields["canon_set"],
        fuse_cross_entropy=False,
        expand_k=1,
        expand_v=2,
        output_gate_rank=16,
        zeyuan_split_init=True,
        zeyuan_layernorm=model_arg(args, "zeyuan_layernorm", False),
        intermediate_size=model_arg(args, "hidden_dim") or 2 * fields["hidden_size"],
    )


def gdn_config_fields(args) -> dict:
    """The "GDN2" config fields of a Lingua model section: head_dim = dim / n_heads (fla's 0.75 d sizing replaced),
    value heads 2x wider, rank-16 output gate, MLP width hidden_dim or 2 * dim."""
    fields = lingua_fields(args, "GDN2")
    return dict(
        **fields,
        norm_eps=model_arg(args, "norm_eps", 1e-5),
        use_short_conv="b" in fields["canon_set"],
        fuse_cross_entropy=False,
        output_gate_rank=16,
        zeyuan_split_init=True,
        zeyuan_layernorm=model_arg(args, "zeyuan_layernorm", False),
        head_dim=fields["hidden_size"] // fields["num_heads"],
        intermediate_size=model_arg(args, "hidden_dim") or 2 * fields["hidden_size"],
    )


def mamba2_config_fields(args) -> dict:
    """The config fields of a Lingua model section with model_name "Mamba2": head_dim = 2 dim / n_heads, one group,
    state size `mamba_ssm` (64, 128 or 256; null means 256, anything else is an error), the conv dropped when
    "b" is not in canon_set, a gated MLP of width hidden_dim (or 2 dim) with mlp_type "mlp10". Lingua's norm_eps
    is stored under that name and not used: the published Mamba2 runs kept layer_norm_epsilon at 1e-5."""
    fields = lingua_fields(args, "Mamba2", exact=True)
    mlp_type = model_arg(args, "mlp_type")
    if mlp_type != "mlp10":
        raise ValueError(f"mlp_type={mlp_type!r}; the Mamba2 recipes need mlp_type='mlp10'")
    state = model_arg(args, "mamba_ssm")
    if state is None:
        state = 256
    elif state not in (64, 128, 256):
        raise ValueError(f"mamba_ssm={state!r}; expected the SSM state size 64, 128 or 256 (or null for 256)")
    noconv = "b" not in fields["canon_set"]
    return dict(
        **fields,
        state_size=state,
        n_groups=1,
        time_step_rank=-10344,
        residual_in_fp32=False,
        head_dim=2 * fields["hidden_size"] // fields["num_heads"],
        noconv1d=noconv,
        use_conv_bias=not noconv,
        mlp_type=mlp_type,
        intermediate_size=model_arg(args, "hidden_dim"),
        norm_eps=model_arg(args, "norm_eps", 1e-5),
        fuse_cross_entropy=False,
    )
