"""The generation cache of the Llama-shaped models (`lingua.transformer.BaseTransformer` and the apps built on it).

`BaseTransformer.forward(..., cache=...)` takes an `InferenceCache`: it asks the cache for RoPE positions and the
attention mask of the new tokens (`prepare`), hands each block its `LayerCache` (keys/values, and Canon conv states
that `lingua/canon.py` keeps under the site's name), and advances `length` once every layer has run. Training never
builds one, so the model code needs nothing from this module.
"""

import torch

from lingua.layers import causal_mask


class InferenceCache:
    """What generation keeps between forward calls: `length` filled slots of every layer's keys and values
    (preallocated [B, KV, max_len, hd]) and the last K-1 inputs of each of its Canon layers.

    Rows may be left-padded to a common prompt length: `pad [B]` counts each row's padding slots. Padding keys are
    masked out of attention, padding inputs are zeroed before Canon convolutions (so a row's Canon layers start with
    zero left context, as without padding), and RoPE positions count from each row's first real token. A row thus
    computes what it would alone (the whole row is one document: document masking does not apply here).
    """

    def __init__(self, n_layers: int, max_len: int, pad: torch.Tensor):
        self.max_len = max_len
        self.pad = pad
        self.padded = bool(pad.any())
        self.length = 0
        self.new_token_mask = None  # [B, T] real (not padding) among the tokens of the current call, if any is not
        self.layers = [LayerCache(self) for _ in range(n_layers)]

    @classmethod
    def for_model(cls, model, pad: torch.Tensor, max_len: int) -> "InferenceCache":
        """The cache of `model` (a BaseTransformer) for rows left-padded by `pad` [B], holding max_len tokens."""
        return cls(len(model.layers), max_len, pad)

    def prepare(self, T: int, sliding_window, device):
        """(RoPE positions [T] or [B, T], attention mask or None) for T new tokens at slots [length, length + T)."""
        if self.length + T > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} tokens; {self.length} + {T} new ones do not fit")
        slots = torch.arange(self.length, self.length + T, device=device)
        pad = self.pad.to(device)
        real = slots[None] >= pad[:, None]
        self.new_token_mask = None if bool(real.all()) else real
        positions = (slots[None] - pad[:, None]).clamp(min=0) if self.padded else slots
        if not self.padded and sliding_window is None and (self.length == 0 or T == 1):
            return positions, None  # plain causal prefill, or one query that sees every cached key
        keys = torch.arange(self.length + T, device=device)
        allowed = causal_mask(slots, keys, sliding_window)[None]
        if self.padded:
            # a padding query keeps itself so that its softmax has one term (its output is never used)
            allowed = (allowed & (keys[None, None, :] >= pad[:, None, None])) | (keys[None, :] == slots[:, None])
        return positions, allowed[:, None]


class LayerCache:
    """One layer's keys/values and its Canon conv states (keyed by site, kept by canon.py's helpers)."""

    def __init__(self, owner: InferenceCache):
        self.owner = owner
        self.keys = self.values = None
        self.conv_states: dict[str, torch.Tensor] = {}

    def update(self, k, v):
        """Store k, v [B, KV, T, hd] in the new slots; return the keys and values of every slot so far."""
        start, end = self.owner.length, self.owner.length + k.shape[2]
        if self.keys is None:
            shape = (k.shape[0], k.shape[1], self.owner.max_len, k.shape[3])
            self.keys, self.values = k.new_zeros(shape), v.new_zeros(shape)
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]
