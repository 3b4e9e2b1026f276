"""Cache-free references that the generation tests of every model family compare against."""

import pytest
import torch
from transformers import GenerationConfig

# chunked prefill arrived in transformers 4.52; older releases reject the option
has_chunked_prefill = pytest.mark.skipif(
    not hasattr(GenerationConfig(), "prefill_chunk_size"), reason="this transformers has no prefill_chunk_size"
)


def reference_beam_search(model, prompt, num_beams, steps):
    """Cache-free beam search: every step re-runs the full sequence; keeps the num_beams best sums of log-probs."""
    beams = [(prompt.tolist(), 0.0)]
    for _ in range(steps):
        candidates = []
        for tokens, score in beams:
            with torch.no_grad():
                logits = model(torch.tensor([tokens]), use_cache=False).logits[0, -1]
            top = torch.log_softmax(logits.float(), dim=-1).topk(num_beams)
            pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
            candidates += [(tokens + [t], score + lp) for lp, t in pairs]
        beams = sorted(candidates, key=lambda c: -c[1])[:num_beams]
    return beams[0][0]


def check_beam_search_with_end_of_sequence(model, vocab, length_penalty):
    """Beam search in which an end-of-sequence token is really produced (and finished beams are ranked with
    `length_penalty`) gives with the cache what it gives without: transformers' own search, run cache-free, is
    the reference."""
    prompt = torch.randint(3, vocab, (2, 6))
    settings = dict(max_new_tokens=8, num_beams=3, do_sample=False, num_return_sequences=2, pad_token_id=0)
    with torch.no_grad():
        # the end token: one that the unconstrained search emits early, so that beams do finish
        eos = int(model.generate(prompt, **settings, eos_token_id=None)[0, prompt.shape[1] + 1])
        settings.update(eos_token_id=eos, length_penalty=length_penalty)
        cached = model.generate(prompt, **settings)
        cache_free = model.generate(prompt, use_cache=False, **settings)
    assert (cached[:, prompt.shape[1] :] == eos).any(), "no beam produced the end-of-sequence token"
    assert cached.tolist() == cache_free.tolist()


def check_left_padded_rows_equal_rows_run_alone(model, vocab, pass_position_ids=False):
    """Three rows of different lengths, left-padded into one batch: each row's logits and greedy continuation equal
    those of the row run alone. The padding is a real token (with a nonzero embedding), so padded positions carry
    values that would leak into the real tokens if any mask were missing. pass_position_ids: the batched forward
    also gets positions counted from each row's first token."""
    rows = [torch.randint(3, vocab, (n,)) for n in (9, 4, 6)]
    pad = int(rows[0][0])
    assert model.get_input_embeddings().weight[pad].abs().sum() > 0
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.full((width - len(r),), pad), r]) for r in rows])
    mask = torch.stack([torch.arange(width) >= width - len(r) for r in rows]).long()
    extra = dict(position_ids=(mask.cumsum(-1) - 1).clamp(min=0)) if pass_position_ids else {}
    generation = dict(max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=pad)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, **extra).logits
        generated = model.generate(ids, attention_mask=mask, **generation)
        for i, row in enumerate(rows):
            alone = model(row[None]).logits[0]
            torch.testing.assert_close(batched[i, width - len(row) :], alone, rtol=1e-4, atol=1e-4)
            # an explicit mask: generate() would otherwise take the pad token's occurrences in the row for padding
            alone_generated = model.generate(row[None], attention_mask=torch.ones_like(row[None]), **generation)[0]
            assert generated[i, width - len(row) :].tolist() == alone_generated.tolist()
