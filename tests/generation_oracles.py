"""Cache-free references that the generation tests of every model family compare against."""

import torch


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


def check_left_padded_rows_equal_rows_run_alone(model, vocab, pass_position_ids=False):
    """Three rows of different lengths, left-padded into one batch: each row's logits and greedy continuation equal
    those of the row run alone. pass_position_ids: the batched forward also gets positions counted from each row's
    first token."""
    rows = [torch.randint(3, vocab, (n,)) for n in (9, 4, 6)]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    mask = torch.stack([torch.arange(width) >= width - len(r) for r in rows]).long()
    extra = dict(position_ids=(mask.cumsum(-1) - 1).clamp(min=0)) if pass_position_ids else {}
    generation = dict(max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, **extra).logits
        generated = model.generate(ids, attention_mask=mask, **generation)
        for i, row in enumerate(rows):
            alone = model(row[None]).logits[0]
            torch.testing.assert_close(batched[i, width - len(row) :], alone, rtol=1e-4, atol=1e-4)
            alone_generated = model.generate(row[None], **generation)[0]
            assert generated[i, width - len(row) :].tolist() == alone_generated.tolist()
