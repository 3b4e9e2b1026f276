"""The linear language models trained by apps/gla (GLA5, GDN2, Mamba2, with or without Canon layers).

The model itself is the Hugging Face one from `huggingface_linear`, held as the child `trans`, so a Lingua checkpoint's
names are "trans." + the HF names (`trans.model.layers.3.attn.q_proj.weight`, `trans.backbone.layers.0.mixer...`,
`trans.lm_head.weight`) and `load_from_lingua_state` / `from_pretrained(<consolidated folder>)` read it back. Lingua's
`model:` section (`LMTransformerArgs`) is turned into the HF config by the model class's `build_config_from_yaml`.

Built on the meta device, materialised with `to_empty(device=...)` and `init_weights()` (the trainer does this under
FSDP2, seeding with `model.seed`). `build_fsdp_grouping_plan`, `get_no_recompute_ops` and `get_num_flop_per_token`
are the trainer's hooks, as in apps/main.
"""

from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from huggingface_linear import (
    GatedDeltaNetCanonForCausalLM,
    GLACanonForCausalLM,
    Mamba2CanonForCausalLM,
)
from lingua.transformer import BaseTransformerArgs, cross_entropy

# model_name prefix -> HF class; each class's build_config_from_yaml then demands its exact family ("GLA5...",
# "GDN2...", exactly "Mamba2")
MODEL_FAMILIES = {"GLA": GLACanonForCausalLM, "GDN": GatedDeltaNetCanonForCausalLM, "Mamba2": Mamba2CanonForCausalLM}


@dataclass
class LMTransformerArgs(BaseTransformerArgs):
    seed: int = 42  # seed of init_weights (the trainer forks the RNG with it)
    vocab_size: int = -1  # filled in from the tokenizer by the trainer
    weight_tying: bool = False
    attn_impl: str = "sdpa"  # kept for config compatibility; the linear models have no attention
    z_loss: bool = False  # squared-NLL penalty l + 1e-4 l^2, as the recipes train (lingua.transformer.cross_entropy)
    model_name: str = "GLA"  # "GLA5...", "GDN2..." or "Mamba2"
    mlp_type: str | None = None  # Mamba2: "mlp10" (the gated MLP after every mixer)
    sliding_window: int | None = None
    mamba_ssm: int | None = None  # Mamba2: the SSM state size N
    zeyuan_linearT: bool = False
    zeyuan_alternate: bool = False
    zeyuan_layernorm: bool = False  # GLA/GDN: picks the output norm's key name (the function is the same)
    zeyuan_double: int | None = None


# Llama-only fields of the shared base and recipe extras the linear models never read: a recipe may carry their
# defaults, but a changed value would silently do nothing, so it is refused
UNUSED_FIELDS = (
    "qk_norm", "head_dim", "n_kv_heads", "ffn_dim_multiplier", "multiple_of", "rope_theta", "rope_dim",
    "init_base_std", "init_std_factor", "sliding_window", "zeyuan_linearT", "zeyuan_alternate", "zeyuan_double",
)  # fmt: skip
MAMBA_STATE_SIZES = (64, 128, 256)  # what Mamba2's config builder takes (null means 256)


def model_class(args: LMTransformerArgs):
    for prefix, cls in MODEL_FAMILIES.items():
        if args.model_name.startswith(prefix):
            return cls
    raise ValueError(f"model_name={args.model_name!r}; expected one starting with GLA5, GDN2, or exactly Mamba2")


def check_args(args: LMTransformerArgs) -> None:
    defaults = {f.name: f.default for f in fields(LMTransformerArgs)}
    changed = [name for name in UNUSED_FIELDS if getattr(args, name) != defaults[name]]
    if args.n_kv_heads in (None, args.n_heads) and "n_kv_heads" in changed:
        changed.remove("n_kv_heads")  # as many KV heads as heads is what the models do
    if changed:
        raise ValueError(
            f"model fields {changed} are set but the linear models do not use them; expected their defaults "
            f"({', '.join(f'{name}={defaults[name]!r}' for name in changed)})"
        )
    if model_class(args) is Mamba2CanonForCausalLM:
        if args.mamba_ssm is not None and args.mamba_ssm not in MAMBA_STATE_SIZES:
            raise ValueError(
                f"model.mamba_ssm={args.mamba_ssm}; expected one of {', '.join(map(str, MAMBA_STATE_SIZES))} "
                "(Mamba2's SSM state size; null means 256)"
            )
        if args.norm_eps != defaults["norm_eps"]:
            raise ValueError(
                f"model.norm_eps={args.norm_eps} but Mamba2 keeps its norms' epsilon at {defaults['norm_eps']}; "
                f"expected {defaults['norm_eps']}"
            )
    elif args.mamba_ssm is not None:
        raise ValueError(f"model.mamba_ssm={args.mamba_ssm} but only Mamba2 has an SSM state; expected null")
    if args.vocab_size <= 0:
        raise ValueError(f"vocab_size={args.vocab_size}; expected a positive size (the trainer sets it)")
    if args.attn_impl != "sdpa":
        raise ValueError(f"attn_impl={args.attn_impl!r}; the linear models take only the default 'sdpa' (unused)")


def hf_config(args: LMTransformerArgs):
    """The Hugging Face config of these model args (what `from_pretrained(<consolidated folder>)` builds too)."""
    return model_class(args).build_config_from_yaml(args)


class LMTransformer(nn.Module):
    def __init__(self, args: LMTransformerArgs):
        super().__init__()
        check_args(args)
        self.seed = args.seed
        self.z_loss = args.z_loss
        self.max_seqlen = args.max_seqlen
        self.trans = model_class(args)(hf_config(args))

    @property
    def layers(self):
        return self.trans.base_model.layers

    def forward(self, token_values, target=None, loss_mask=None, attention_mask=None, cache=None):
        """token_values [B, T] -> logits [B, T, V], or with target [B, T] the scalar training loss.

        loss_mask [B, T] (1 = train on this position) excludes positions from the mean loss. attention_mask [B, T]
        (1 = real token) marks padding, which the models keep out of every conv and recurrent state. Training passes
        neither mask to the model: packed documents run through one recurrence, as the published runs trained.
        cache: the LinearGenerationCache of generation (apps/gla/generation_cache.py, which this app's ModelSpec
        declares): it counts the new tokens in and gives the mask of every slot so far (left padding is 0), and its
        LinearCanonCache holds the recurrent, conv and Canon states that these tokens extend.
        """
        states = None
        if cache is not None:
            attention_mask, states = cache.attention_mask(token_values.shape[1], token_values.device), cache.states
        logits = self.trans(
            token_values, attention_mask=attention_mask, past_key_values=states, use_cache=cache is not None
        ).logits
        if target is None:
            return logits
        return cross_entropy(logits, target, loss_mask, z_loss=self.z_loss)

    def init_weights(self):
        """The Hugging Face model's own initialisation of every module, then weight tying. The HF models mark what they
        initialised; after `to_empty` the memory is garbage, so every mark is cleared first. Under FSDP2 the
        parameters are shards (DTensors) by now, which `ShardedCopies` lets the HF init fill."""
        for item in [*self.modules(), *self.parameters(), *self.buffers()]:
            if hasattr(item, "_is_hf_initialized"):
                del item._is_hf_initialized
        with ShardedCopies():
            self.trans.init_weights()


class ShardedCopies(TorchFunctionMode):
    """Lets a whole-tensor copy fill an FSDP2 shard: `shard.copy_(whole)` keeps this rank's slice of `whole`.

    The HF models initialise some parameters by drawing the whole tensor and copying it in (Mamba2's and GDN's decay
    parameters); the trainer initialises after sharding, when each such parameter is this rank's DTensor shard.
    Every rank draws the same whole tensor from the same seed, so each keeps its own slice and the shards together
    hold exactly what an unsharded run draws. Every other operation runs unchanged.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.copy_ and hasattr(args[0], "device_mesh") and not hasattr(args[1], "device_mesh"):
            from torch.distributed.tensor import distribute_tensor

            shard, whole = args[0], args[1]
            whole = distribute_tensor(whole.to(shard.device), shard.device_mesh, shard.placements, src_data_rank=None)
            args = (shard, whole, *args[2:])
        return func(*args, **kwargs)


def get_no_recompute_ops():
    """Ops whose outputs selective activation checkpointing keeps: None = the trainer's default list."""
    return None


def build_fsdp_grouping_plan(model_args: LMTransformerArgs):
    """(module name, reshard_after_forward) for each FSDP2 unit: the embedding and every block stay unsharded after
    forward (backward needs them soon), the output head is resharded. Mamba2's base model is `backbone`, the others'
    `model`. With weight tying the head holds no parameter of its own, so it gets no unit."""
    base = "trans.backbone" if model_class(model_args) is Mamba2CanonForCausalLM else "trans.model"
    plan = [(f"{base}.embeddings", False)]
    plan += [(f"{base}.layers.{i}", False) for i in range(model_args.n_layers)]
    if not model_args.weight_tying:
        plan.append(("trans.lm_head", True))
    return plan


def recurrent_state_size(config) -> int:
    """Numbers in one layer's recurrent state of one sequence (heads x key x value, or heads x P x N for Mamba2)."""
    if isinstance(config, Mamba2CanonForCausalLM.config_class):
        return config.num_heads * config.head_dim * config.state_size
    if isinstance(config, GatedDeltaNetCanonForCausalLM.config_class):
        return config.num_heads * config.head_dim * config.head_v_dim
    return config.key_dim * config.value_dim // config.num_heads


def get_num_flop_per_token(num_params: int, model_args: LMTransformerArgs) -> float:
    """Training FLOPs per token: 6 per non-embedding parameter (num_params counts neither the embedding nor an untied
    head) plus the recurrence, which reads and updates each layer's state once per token (2 x 2 FLOPs per state
    entry forward, x3 with backward). Llama's attention term does not apply to these models."""
    state = recurrent_state_size(hf_config(model_args))
    return 6 * num_params + 12 * model_args.n_layers * state
