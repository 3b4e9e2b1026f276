"""The generation cache of the linear models (apps.gla's LMTransformer): what decoding keeps between forward calls.

The Hugging Face model updates every layer's recurrent, short-conv and Canon states in a `LinearCanonCache`; this
object holds that cache with what the model needs beside it: each row's left padding, turned into the attention mask
the model receives (padding never enters a state, so a left-padded row computes what it would alone), and how many
slots are filled. Every new token then costs the same whatever the context length.
"""

import torch

from huggingface_linear import LinearCanonCache


class LinearGenerationCache:
    def __init__(self, pad: torch.Tensor, max_len: int):
        self.pad = pad  # [B] padding slots at the start of each row
        self.max_len = max_len
        self.length = 0  # slots filled so far
        self.states = LinearCanonCache()

    @classmethod
    def for_model(cls, model, pad: torch.Tensor, max_len: int) -> "LinearGenerationCache":
        """The cache of a linear LMTransformer for rows left-padded by `pad` [B], holding max_len tokens."""
        return cls(pad, max_len)

    def attention_mask(self, n_new: int, device) -> torch.Tensor:
        """Count n_new tokens in and return the [B, length] mask of every slot so far (1: a real token, 0: padding)."""
        if self.length + n_new > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} tokens; {self.length} + {n_new} new ones do not fit")
        self.length += n_new
        slots = torch.arange(self.length, device=device)
        return (slots[None] >= self.pad.to(device)[:, None]).long()
