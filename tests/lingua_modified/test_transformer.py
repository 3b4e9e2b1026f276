import math

import pytest
import torch
import torch.nn.functional as F

from apps.main.transformer import (
    LMTransformer,
    LMTransformerArgs,
    build_fsdp_grouping_plan,
    get_no_recompute_ops,
    get_num_flop_per_token,
)
from lingua.transformer import (
    BaseTransformerArgs,
    apply_rotary_emb,
    attention_mask,
    cross_entropy,
    document_ids,
    ffn_hidden_dim,
)

VOCAB = 61
BOS = 1


def tiny_args(**overrides):
    fields = dict(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=VOCAB, canon_set="ABCD",
        qk_norm=True, rope_dim=4, max_seqlen=64,
    )  # fmt: skip
    fields.update(overrides)
    return LMTransformerArgs(**fields)


def tiny_model(seed=0, **overrides):
    """An initialised 2-layer GQA model; norm weights perturbed so that their placement matters."""
    torch.manual_seed(seed)
    model = LMTransformer(tiny_args(**overrides))
    model.init_weights()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


# ----------------------------------------------------------------------------------------------------------------
# Names, shapes, sizes
# ----------------------------------------------------------------------------------------------------------------


def test_state_dict_names_order_and_shapes_are_the_references():
    model = tiny_model()
    C = (4 + 2 * 2) * 8
    per_layer = [
        ("canonA.weight", (32, 1, 4)),
        ("canonC.weight", (32, 1, 4)),
        ("attention.wq.weight", (32, 32)),
        ("attention.wk.weight", (16, 32)),
        ("attention.wv.weight", (16, 32)),
        ("attention.wo.weight", (32, 32)),
        ("attention.q_norm.weight", (32,)),
        ("attention.k_norm.weight", (16,)),
        ("attention.canonB.weight", (C, 1, 4)),
        ("feed_forward.w1.weight", (48, 32)),
        ("feed_forward.w3.weight", (48, 32)),
        ("feed_forward.w2.weight", (32, 48)),
        ("feed_forward.canonD.weight", (96, 1, 4)),
        ("attention_norm.weight", (32,)),
        ("ffn_norm.weight", (32,)),
    ]
    expected = [(f"layers.{i}.{name}", shape) for i in range(2) for name, shape in per_layer]
    expected += [("tok_embeddings.weight", (VOCAB, 32)), ("norm.weight", (32,)), ("output.weight", (VOCAB, 32))]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected

    plain = LMTransformer(tiny_args(canon_set="", qk_norm=False))
    assert not any("canon" in k or "q_norm" in k or "k_norm" in k for k in plain.state_dict())


def test_weight_tying_shares_the_embedding_under_the_reference_key():
    model = tiny_model(weight_tying=True)
    state = model.state_dict()
    assert "output.tied_module.weight" in state and "output.weight" not in state
    assert model.output.tied_module.weight is model.tok_embeddings.weight
    hidden = torch.randn(2, 5, 32)
    torch.testing.assert_close(model.output(hidden), hidden @ model.tok_embeddings.weight.T)


RECIPE_SHAPES = {
    "1B": dict(dim=2048, n_layers=24, n_heads=32, vocab_size=32000, qk_norm=True, rope_dim=16),
    "3B": dict(dim=3072, n_layers=26, n_heads=24, vocab_size=32000, qk_norm=True, rope_dim=32),
    "8B": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden_dim=14336, ffn_dim_multiplier=1.0,
               rope_theta=100000.0, vocab_size=128256, rope_dim=32),
}  # fmt: skip


@pytest.mark.parametrize(
    "size,canon_set,total,canon_params",
    [
        ("1B", "", 1_364_396_032, 0),
        ("1B", "ABCD", 1_366_460_416, 2_064_384),
        ("3B", "", 3_141_331_968, 0),
        ("3B", "ABCD", 3_144_633_344, 3_301_376),
        ("8B", "", 8_030_261_248, 0),
        ("8B", "ABCD", 8_035_766_272, 5_505_024),
    ],
)
def test_parameter_counts_of_the_published_models_on_the_meta_device(size, canon_set, total, canon_params):
    with torch.device("meta"):
        model = LMTransformer(LMTransformerArgs(canon_set=canon_set, **RECIPE_SHAPES[size]))
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == total
    assert sum(p.numel() for name, p in params.items() if "canon" in name) == canon_params


def test_ffn_hidden_dim_formula():
    assert [ffn_hidden_dim(BaseTransformerArgs(dim=d)) for d in (2048, 3072, 4096)] == [5632, 8192, 11008]
    assert ffn_hidden_dim(BaseTransformerArgs(dim=4096, ffn_dim_multiplier=1.3)) == 14336
    assert ffn_hidden_dim(BaseTransformerArgs(dim=4096, hidden_dim=1000, ffn_dim_multiplier=1.3)) == 1000
    for dim in range(64, 3000, 37):
        for multiple_of in (1, 64, 256):
            width = math.floor(8 * dim / 3)
            expected = -(-width // multiple_of) * multiple_of
            assert ffn_hidden_dim(BaseTransformerArgs(dim=dim, multiple_of=multiple_of)) == expected


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(canon_set="ABX"), "canon_set='ABX'"),
        (dict(rope_dim=3), "rope_dim=3"),
        (dict(n_kv_heads=3), "n_kv_heads=3"),
        (dict(n_heads=None), "n_heads or head_dim"),
        (dict(init_std_factor="depth"), "init_std_factor='depth'"),
        (dict(vocab_size=-1), "vocab_size=-1"),
        (dict(attn_impl="fmha"), "attn_impl='fmha'"),
        (dict(document_mask=True), "bos_id=-1"),
    ],
)
def test_bad_model_arguments_give_one_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        LMTransformer(tiny_args(**overrides))


def test_head_dim_alone_determines_the_heads():
    model = LMTransformer(tiny_args(n_heads=None, head_dim=8, n_kv_heads=None))
    assert model.layers[0].attention.n_heads == 4 and model.layers[0].attention.n_kv_heads == 4


# ----------------------------------------------------------------------------------------------------------------
# Forward against an independent implementation
# ----------------------------------------------------------------------------------------------------------------


def reference_logits(model, args, ids):
    """Lingua's forward written independently: complex-number RoPE on interleaved pairs, Canon as explicit taps."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    H, KV, hd, R = args.n_heads, args.n_kv_heads, args.dim // args.n_heads, args.rope_dim or args.dim // args.n_heads
    T = ids.shape[1]

    def rms(x, w):
        return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + args.norm_eps)

    def canon(x, w):  # w [C, 1, K]; tap k multiplies x[t - (K-1) + k]
        K = w.shape[-1]
        out = x.clone()
        for k in range(K):
            back = K - 1 - k
            out[:, back:] += w[:, 0, k] * x[:, : T - back]
        return out

    freqs = args.rope_theta ** (-torch.arange(0, R, 2).float() / R)
    rot = torch.polar(torch.ones(T, R // 2), torch.arange(T).float()[:, None] * freqs)

    def rope(x):
        head = torch.view_as_complex(x[..., :R].reshape(*x.shape[:-1], R // 2, 2).contiguous())
        return torch.cat([torch.view_as_real(head * rot[:, None]).flatten(-2), x[..., R:]], -1)

    h = sd["tok_embeddings.weight"][ids]
    for i in range(args.n_layers):
        w = lambda name, i=i: sd[f"layers.{i}.{name}.weight"]  # noqa: E731
        x = canon(rms(h, w("attention_norm")), w("canonA"))
        q, k, v = x @ w("attention.wq").T, x @ w("attention.wk").T, x @ w("attention.wv").T
        q, k = rms(q, w("attention.q_norm")), rms(k, w("attention.k_norm"))
        q, k, v = canon(torch.cat([q, k, v], -1), w("attention.canonB")).split([H * hd, KV * hd, KV * hd], -1)
        q, k = rope(q.unflatten(-1, (H, hd))), rope(k.unflatten(-1, (KV, hd)))
        k, v = k.repeat_interleave(H // KV, 2), v.unflatten(-1, (KV, hd)).repeat_interleave(H // KV, 2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        att = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).flatten(-2)
        h = h + att @ w("attention.wo").T
        x = canon(rms(h, w("ffn_norm")), w("canonC"))
        gate_up = torch.cat([x @ w("feed_forward.w1").T, x @ w("feed_forward.w3").T], -1)
        gate_up = canon(gate_up, w("feed_forward.canonD"))
        gate, up = gate_up.chunk(2, -1)
        h = h + (F.silu(gate) * up) @ w("feed_forward.w2").T
    return rms(h, sd["norm.weight"]) @ sd["output.weight"].T


def test_forward_matches_an_independent_lingua_forward():
    args = tiny_args()
    model = tiny_model()
    ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference_logits(model, args, ids), rtol=1e-5, atol=1e-5)


def test_rope_rotates_interleaved_pairs_of_the_first_rope_dim_coordinates():
    x = torch.randn(2, 5, 3, 8)
    R, theta = 4, 10000.0
    angles = torch.arange(5).float()[:, None] * theta ** (-torch.arange(0, R, 2).float() / R)
    out = apply_rotary_emb(x, angles.cos(), angles.sin())
    pairs = torch.view_as_complex(x[..., :R].reshape(2, 5, 3, R // 2, 2).contiguous())
    expected = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)[:, None]).flatten(-2)
    torch.testing.assert_close(out[..., :R], expected)
    assert torch.equal(out[..., R:], x[..., R:])


@pytest.mark.parametrize("residual,activation", [(True, False), (False, False), (True, True)])
def test_canon_layer_is_a_causal_depthwise_conv_with_residual(residual, activation):
    model = LMTransformer(tiny_args(canon_residual=residual, canon_activation=activation, canon_kernel=3))
    canon = model.layers[0].canonA
    x = torch.randn(2, 7, 32)
    w = canon.weight[:, 0, :].detach()
    conv = torch.stack(
        [sum(w[:, k] * x[:, t - 2 + k] for k in range(3) if t - 2 + k >= 0) for t in range(7)], dim=1
    )  # fmt: skip
    conv = F.silu(conv) if activation else conv
    expected = x + conv if residual else conv
    with torch.no_grad():
        torch.testing.assert_close(canon(x), expected)
        torch.testing.assert_close(canon(x, doc_ids=torch.zeros(2, 7, dtype=torch.long)), expected)


# ----------------------------------------------------------------------------------------------------------------
# Loss: masking and the two z-losses
# ----------------------------------------------------------------------------------------------------------------


def test_loss_mask_excludes_positions_from_the_mean():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 6, VOCAB, requires_grad=True), torch.randint(0, VOCAB, (2, 6))
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 0]])
    loss = cross_entropy(logits, target, loss_mask=mask)
    kept = mask.bool()
    torch.testing.assert_close(loss, F.cross_entropy(logits[kept], target[kept]))
    loss.backward()
    assert torch.all(logits.grad[~kept] == 0) and torch.all(logits.grad[kept].abs().sum(-1) > 0)
    other = target.clone()
    other[~kept] = (other[~kept] + 1) % VOCAB
    assert cross_entropy(logits, other, loss_mask=mask) == loss
    torch.testing.assert_close(cross_entropy(logits, target, loss_mask=torch.ones(2, 6)), cross_entropy(logits, target))
    assert cross_entropy(logits, target, loss_mask=torch.zeros(2, 6)) == 0


def test_model_loss_equals_the_manual_masked_mean():
    model = tiny_model(z_loss=True)
    ids, target = torch.randint(0, VOCAB, (2, 9)), torch.randint(0, VOCAB, (2, 9))
    mask = torch.rand(2, 9) > 0.4
    with torch.no_grad():
        logits = model(ids)
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")[mask.flatten()]
        torch.testing.assert_close(model(ids, target, loss_mask=mask), (nll + 1e-4 * nll**2).mean())


@pytest.mark.parametrize("z_loss,z_loss_logz", [(False, False), (True, False), (False, True), (True, True)])
def test_z_loss_options_match_their_formulas(z_loss, z_loss_logz):
    torch.manual_seed(1)
    logits, target = 4 * torch.randn(3, 5, VOCAB), torch.randint(0, VOCAB, (3, 5))
    probs = logits.double().softmax(-1)
    nll = -probs.gather(-1, target[..., None]).squeeze(-1).log()
    log_z = logits.double().exp().sum(-1).log()
    expected = nll + z_loss * 1e-4 * nll**2 + z_loss_logz * 1e-4 * log_z**2
    loss = cross_entropy(logits, target, z_loss=z_loss, z_loss_logz=z_loss_logz)
    torch.testing.assert_close(loss.double(), expected.mean(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Document masking
# ----------------------------------------------------------------------------------------------------------------


def test_document_mask_equals_running_each_document_separately():
    model = tiny_model(document_mask=True, bos_id=BOS)
    docs = [torch.randint(3, VOCAB, (5,)), torch.randint(3, VOCAB, (7,)), torch.randint(3, VOCAB, (2,))]
    docs = [docs[0]] + [torch.cat([torch.tensor([BOS]), d]) for d in docs[1:]]  # the row starts mid-document
    row = torch.cat(docs)[None]
    separate = LMTransformer(tiny_args())
    separate.load_state_dict(model.state_dict())
    with torch.no_grad():
        packed = model(row)
        expected = torch.cat([separate(d[None]) for d in docs], dim=1)
        torch.testing.assert_close(packed, expected, rtol=1e-5, atol=1e-5)
        assert (separate(row) - expected).abs().max() > 1e-2  # without the mask documents do interact


def test_document_ids_and_attention_mask():
    ids = torch.tensor([[5, BOS, 7, 8, BOS, 9]])
    doc = document_ids(ids, BOS)
    assert doc.tolist() == [[0, 1, 1, 1, 2, 2]]
    mask = attention_mask(doc, 6, sliding_window=2, device="cpu")[0, 0]
    expected = [[q >= k and q - k < 2 and doc[0, q] == doc[0, k] for k in range(6)] for q in range(6)]
    assert mask.tolist() == expected
    assert attention_mask(None, 6, None, "cpu") is None


def test_sliding_window_limits_how_far_back_attention_reaches():
    model = tiny_model(canon_set="", sliding_window=3)
    ids = torch.randint(0, VOCAB, (1, 10))
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids), model(changed)
    # 2 layers x window 3: position t sees back to t - 4 at most
    assert torch.equal(a[0, 5:], b[0, 5:]) and not torch.allclose(a[0, :5], b[0, :5])


# ----------------------------------------------------------------------------------------------------------------
# Initialisation, meta device, gradients, trainer hooks
# ----------------------------------------------------------------------------------------------------------------

TRUNC3 = math.sqrt(1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2)))  # std of N(0,1)|<3


def init_model(**overrides):
    torch.manual_seed(0)
    model = LMTransformer(
        tiny_args(dim=128, n_layers=3, n_heads=4, n_kv_heads=4, hidden_dim=384, vocab_size=512, rope_dim=None,
                  **overrides)
    )  # fmt: skip
    model.init_weights()
    return model


@pytest.mark.parametrize(
    "mode,factors",
    [
        ("disabled", [1, 1, 1]),
        ("current_depth", [math.sqrt(2), math.sqrt(4), math.sqrt(6)]),
        ("global_depth", [math.sqrt(8)] * 3),
        ("dim_ratio", [128 / 4096] * 3),
    ],
)
@pytest.mark.parametrize("base_std", [None, 0.02])
def test_init_std_per_mode(mode, factors, base_std):
    model = init_model(init_std_factor=mode, init_base_std=base_std)

    def check(weight, std):
        assert abs(weight.std().item() / (std * TRUNC3) - 1) < 0.03, (weight.std().item(), std)
        assert weight.abs().max().item() <= 3 * std

    for layer, factor in zip(model.layers, factors, strict=True):
        for linear in ("wq", "wk", "wv"):
            check(getattr(layer.attention, linear).weight, base_std or 128**-0.5)
        check(layer.attention.wo.weight, (base_std or 128**-0.5) / factor)
        check(layer.feed_forward.w1.weight, base_std or 128**-0.5)
        check(layer.feed_forward.w2.weight, (base_std or 384**-0.5) / factor)
        for canon in (layer.canonA, layer.canonC, layer.attention.canonB, layer.feed_forward.canonD):
            assert abs(canon.weight.std().item() * math.sqrt(3 * 4) - 1) < 0.1  # default conv init, whatever mode
            assert canon.weight.abs().max().item() <= 0.5
        for norm in (layer.attention_norm, layer.ffn_norm, layer.attention.q_norm, layer.attention.k_norm):
            assert torch.all(norm.weight == 1)
    check(model.tok_embeddings.weight, 128**-0.5)
    check(model.output.weight, 128**-0.5)


def test_meta_construction_then_to_empty_and_init_weights_equals_a_direct_build():
    with torch.device("meta"):
        meta = LMTransformer(tiny_args())
    assert all(p.is_meta for p in meta.parameters())
    meta.to_empty(device="cpu")
    torch.manual_seed(3)
    meta.init_weights()
    direct = LMTransformer(tiny_args())
    torch.manual_seed(3)
    direct.init_weights()
    for (name, a), (_, b) in zip(meta.state_dict().items(), direct.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, VOCAB, (1, 6))
    assert torch.isfinite(meta(ids)).all()


def test_gradients_reach_every_parameter_and_fused_paths_agree_with_plain_ones():
    fused = tiny_model()
    plain = tiny_model(document_mask=True, bos_id=BOS)  # no BOS in the batch: one document, non-fused Canon path
    ids, target = torch.randint(3, VOCAB, (2, 11)), torch.randint(0, VOCAB, (2, 11))
    fused(ids, target).backward()
    plain(ids, target).backward()
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters(), strict=True):
        assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fsdp_grouping_plan_flops_and_recompute_hooks():
    args = LMTransformerArgs(n_layers=3)
    assert build_fsdp_grouping_plan(args) == [
        ("tok_embeddings", False), ("layers.0", False), ("layers.1", False), ("layers.2", False), ("output", True),
    ]  # fmt: skip
    assert build_fsdp_grouping_plan(LMTransformerArgs(n_layers=1, weight_tying=True))[-1] == ("layers.0", False)
    assert get_no_recompute_ops() is None
    n = 1_366_460_416 - 32000 * 2048  # total - vocab * dim, as the trainer computes it
    assert get_num_flop_per_token(n, 24, 2048, 4096) == 6 * n + 7 * 24 * 4096 * 2048
