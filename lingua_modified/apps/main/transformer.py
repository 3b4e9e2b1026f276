"""The Llama / LlamaCanon language model trained by apps/main, and what the trainer needs to parallelise it.

`LMTransformer` = token embedding -> `BaseTransformer` blocks -> RMSNorm -> output head. It can be built on the meta
device and materialised with `to_empty(device=...)` followed by `init_weights()` (the trainer does this under FSDP2,
seeding with `model.seed`). `build_fsdp_grouping_plan`, `get_no_recompute_ops` and `get_num_flop_per_token` are the
hooks the trainer's parallelism and metrics code calls.
"""

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from lingua.layers import RMSNorm
from lingua.transformer import BaseTransformer, BaseTransformerArgs, cross_entropy, document_ids, trunc_normal_

ATTENTION_IMPLEMENTATIONS = ("sdpa",)


@dataclass
class LMTransformerArgs(BaseTransformerArgs):
    seed: int = 42  # seed of init_weights (the trainer forks the RNG with it)
    vocab_size: int = -1  # filled in from the tokenizer by the trainer
    weight_tying: bool = False
    attn_impl: str = "sdpa"
    z_loss: bool = False  # squared-NLL penalty l + 1e-4 l^2, as the recipes train (lingua.transformer.cross_entropy)
    sliding_window: int | None = None  # attend to at most this many keys back (None: whole causal prefix)
    z_loss_logz: bool = False  # the standard log-partition z-loss 1e-4 * logsumexp(logits)^2
    document_mask: bool = False  # attention and Canon layers stay within documents (a BOS token starts one)
    bos_id: int = -1  # BOS token id; required by document_mask (the trainer fills it in from the tokenizer)


class TiedLinear(nn.Module):
    """Output head sharing the embedding matrix; its state-dict key is `output.tied_module.weight` as in Lingua."""

    def __init__(self, tied_module: nn.Embedding):
        super().__init__()
        self.tied_module = tied_module

    def forward(self, x):
        return F.linear(x, self.tied_module.weight)


class LMTransformer(BaseTransformer):
    def __init__(self, args: LMTransformerArgs):
        super().__init__(args)
        if args.vocab_size <= 0:
            raise ValueError(f"vocab_size={args.vocab_size}; expected a positive size (the trainer sets it)")
        if args.attn_impl not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_impl={args.attn_impl!r} is not supported; expected one of {ATTENTION_IMPLEMENTATIONS}"
            )
        if args.document_mask and args.bos_id < 0:
            raise ValueError(f"document_mask needs the BOS token id; got bos_id={args.bos_id}")
        if args.sliding_window is not None and args.sliding_window < 1:
            raise ValueError(f"sliding_window={args.sliding_window}; expected a positive number of keys or None")
        self.seed = args.seed
        self.weight_tying = args.weight_tying
        self.z_loss, self.z_loss_logz = args.z_loss, args.z_loss_logz
        self.sliding_window = args.sliding_window
        self.bos_id = args.bos_id if args.document_mask else None
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        if args.weight_tying:
            self.output = TiedLinear(self.tok_embeddings)
        else:
            self.output = nn.Linear(args.dim, args.vocab_size, bias=False)

    def forward(self, token_values, target=None, loss_mask=None, tok_idx=None, cache=None):
        """token_values [B, T] -> logits [B, T, V], or with target [B, T] the scalar training loss.

        loss_mask [B, T] (1 = train on this position) excludes positions from the mean loss.
        tok_idx: RoPE positions ([T] or [B, T]), default 0..T-1 in every row.
        cache: a lingua.generation_cache.InferenceCache (generation) that these tokens extend.
        """
        doc_ids = None if self.bos_id is None or cache is not None else document_ids(token_values, self.bos_id)
        h = super().forward(self.tok_embeddings(token_values), tok_idx, doc_ids, self.sliding_window, cache)
        logits = self.output(self.norm(h))
        if target is None:
            return logits
        return cross_entropy(logits, target, loss_mask, z_loss=self.z_loss, z_loss_logz=self.z_loss_logz)

    def reset_parameters(self):
        """Embedding and (untied) output ~ truncated Normal(0, dim^-0.5); final norm to 1."""
        std = self.dim**-0.5
        trunc_normal_(self.tok_embeddings.weight, std)
        if not self.weight_tying:
            trunc_normal_(self.output.weight, std)
        self.norm.reset_parameters()

    def init_weights(self):
        self.reset_parameters()
        super().init_weights()


def get_no_recompute_ops():
    """Ops whose outputs selective activation checkpointing keeps: None = the trainer's default list."""
    return None


def build_fsdp_grouping_plan(model_args: LMTransformerArgs):
    """(module name, reshard_after_forward) for each FSDP2 unit, in the order they are wrapped.

    Embedding and blocks stay unsharded after forward (backward needs them soon), the output head is resharded. With
    weight tying the head owns no parameter of its own (the embedding unit holds it), so it gets no unit.
    """
    plan = [("tok_embeddings", False)]
    plan += [(f"layers.{i}", False) for i in range(model_args.n_layers)]
    if not model_args.weight_tying:
        plan.append(("output", True))
    return plan


def get_num_flop_per_token(num_params: int, n_layers: int, dim: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 per non-embedding parameter (num_params = total - vocab_size * dim) plus causal
    attention, 3.5 * (4 * n_layers * seq_len * dim // 2) (= 6N + 7 L S d)."""
    return 6 * num_params + 3.5 * (4 * n_layers * seq_len * dim // 2)
