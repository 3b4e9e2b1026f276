"""Exact state-dict names, order and shapes for every option (the layouts of the published checkpoints, scaled down),
and the canon_set spellings that mean the same model."""

import pytest
import torch

# The published checkpoints' keys of one layer; shapes in symbols resolved per test. "when" names the option
# that makes the key exist.
GLA_LAYER = [
    ("attn_norm.weight", ("d",), None),
    ("canonA.weight", ("d", 1, "W"), "A"),
    ("attn.q_proj.weight", ("K", "d"), None),
    ("attn.k_proj.weight", ("K", "d"), None),
    ("attn.v_proj.weight", ("V", "d"), None),
    ("attn.g_proj.0.weight", ("r", "d"), None),
    ("attn.g_proj.1.weight", ("V", "r"), None),
    ("attn.g_proj.1.bias", ("V",), None),
    ("attn.q_conv1d.weight", ("K", 1, "W"), "b"),
    ("attn.k_conv1d.weight", ("K", 1, "W"), "b"),
    ("attn.v_conv1d.weight", ("V", 1, "W"), "b"),
    ("attn.canonB.weight", ("2K+V", 1, "W"), "B"),
    ("attn.gk_proj.0.weight", (16, "d"), None),
    ("attn.gk_proj.1.weight", ("K", 16), None),
    ("attn.gk_proj.1.bias", ("K",), None),
    ("attn.o_proj.weight", ("d", "V"), None),
    ("attn.g_norm_swish_gate.weight", ("dv",), "fused"),
    ("attn.g_norm.weight", ("dv",), "zl"),
    ("canonC.weight", ("d", 1, "W"), "C"),
    ("mlp_norm.weight", ("d",), None),
    ("mlp.gate_proj.weight", ("2I", "d"), None),
    ("mlp.canonD.weight", ("2I", 1, "W"), "D"),
    ("mlp.down_proj.weight", ("d", "I"), None),
]
GDN_LAYER = [
    ("attn_norm.weight", ("d",), None),
    ("canonA.weight", ("d", 1, "W"), "A"),
    ("canonC.weight", ("d", 1, "W"), "C"),
    ("attn.A_log", ("H",), None),
    ("attn.dt_bias", ("H",), None),
    ("attn.q_proj.weight", ("K", "d"), None),
    ("attn.k_proj.weight", ("K", "d"), None),
    ("attn.v_proj.weight", ("V", "d"), None),
    ("attn.b_proj.weight", ("H", "d"), None),
    ("attn.a_proj.weight", ("H", "d"), None),
    ("attn.canonB.weight", ("2K+V", 1, "W"), "B"),
    ("attn.q_conv1d.weight", ("K", 1, "W"), "b"),
    ("attn.k_conv1d.weight", ("K", 1, "W"), "b"),
    ("attn.v_conv1d.weight", ("V", 1, "W"), "b"),
    ("attn.g_proj.0.weight", ("r", "d"), None),
    ("attn.g_proj.1.weight", ("V", "r"), None),
    ("attn.g_proj.1.bias", ("V",), None),
    ("attn.o_norm.weight", ("dv",), None),
    ("attn.o_proj.weight", ("d", "V"), None),
    ("mlp_norm.weight", ("d",), None),
    ("mlp.down_proj.weight", ("d", "I"), None),
    ("mlp.canonD.weight", ("2I", 1, "W"), "D"),
    ("mlp.both_proj.weight", ("2I", "d"), "D"),
    ("mlp.gate_proj.weight", ("I", "d"), "no D"),
    ("mlp.up_proj.weight", ("I", "d"), "no D"),
]
MAMBA2_LAYER = [
    ("norm.weight", ("d",), None),
    ("canonA.weight", ("d", 1, "W"), "A"),
    ("mixer.dt_bias", ("H",), None),
    ("mixer.A_log", ("H",), None),
    ("mixer.D", ("H",), None),
    ("mixer.conv1d.weight", ("I+2GN", 1, "W"), None),
    ("mixer.conv1d.bias", ("I+2GN",), "b"),
    ("mixer.in_proj.weight", ("2I+2GN+H", "d"), None),
    ("mixer.canonB.weight", ("2I+2GN+H", 1, "W"), "B"),
    ("mixer.norm.weight", ("I",), None),
    ("mixer.out_proj.weight", ("d", "I"), None),
    ("pre_mlp_layernorm.weight", ("d",), "mlp"),
    ("canonC.weight", ("d", 1, "W"), "C+mlp"),
    ("mlp.both_proj.weight", ("2M", "d"), "mlp"),
    ("mlp.down_proj.weight", ("d", "M"), "mlp"),
    ("mlp.canonD.weight", ("2M", 1, "W"), "D+mlp"),
]


def present(when, options):
    return when is None or all(part in options for part in when.split("+")) if when != "no D" else "D" not in options


def expected_state_dict(listing, prefix, top, bottom, options, sizes, layers=2):
    keys = [top]
    for i in range(layers):
        for name, shape, when in listing:
            if present(when, options):
                keys.append((f"{prefix}.layers.{i}.{name}", shape))
    keys += bottom
    return [(name, tuple(sizes.get(s, s) for s in shape)) for name, shape in keys]


def actual(model):
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items()]


def options_of(canon_set, extra=()):
    return set(canon_set) | set(extra)


GLA_CASES = [("AbbCD", False), ("bb", False), ("AbbCD", True), ("ABCD", False), ("", True), ("AbCD", False)]


@pytest.mark.parametrize("canon_set, zeyuan_layernorm", GLA_CASES)
def test_gla_state_dict(make_model, canon_set, zeyuan_layernorm):
    model = make_model("gla", canon_set, zeyuan_layernorm=zeyuan_layernorm)
    d, V, I = 16, 32, 24  # noqa: E741
    sizes = {"d": d, "K": d, "V": V, "r": 4, "W": 4, "2K+V": 2 * d + V, "dv": V // 2, "I": I, "2I": 2 * I}
    options = options_of(canon_set, ["zl"] if zeyuan_layernorm else ["fused"])
    expected = expected_state_dict(
        GLA_LAYER, "model", ("model.embeddings.weight", (37, d)), [("model.norm.weight", (d,)),
        ("lm_head.weight", (37, d))], options, sizes,
    )  # fmt: skip
    assert actual(model) == expected


@pytest.mark.parametrize("canon_set", ["AbbCD", "bb", "ABCD", "AbC", ""])
def test_gdn_state_dict(make_model, canon_set):
    model = make_model("gdn", canon_set)
    d, H, V, I = 16, 2, 32, 24  # noqa: E741
    sizes = {"d": d, "K": d, "V": V, "H": H, "r": 4, "W": 4, "2K+V": 2 * d + V, "dv": V // H, "I": I, "2I": 2 * I}
    expected = expected_state_dict(
        GDN_LAYER, "model", ("model.embeddings.weight", (37, d)), [("model.norm.weight", (d,)),
        ("lm_head.weight", (37, d))], options_of(canon_set), sizes,
    )  # fmt: skip
    assert actual(model) == expected


@pytest.mark.parametrize("canon_set, mlp", [("AbbCD", True), ("bb", True), ("ABCD", True), ("AbbCD", False)])
def test_mamba2_state_dict(make_model, canon_set, mlp):
    model = make_model("mamba2", canon_set, mlp_type="mlp10" if mlp else None)
    d, I, G, N, H, M = 16, 32, 1, 4, 4, 32  # noqa: E741
    sizes = {"d": d, "H": H, "W": 4, "I": I, "I+2GN": I + 2 * G * N, "2I+2GN+H": 2 * I + 2 * G * N + H, "M": M,
             "2M": 2 * M}  # fmt: skip
    expected = expected_state_dict(
        MAMBA2_LAYER, "backbone", ("backbone.embeddings.weight", (37, d)), [("backbone.norm_f.weight", (d,)),
        ("lm_head.weight", (37, d))], options_of(canon_set, ["mlp"] if mlp else []), sizes,
    )  # fmt: skip
    assert actual(model) == expected


def test_mamba2_without_b_keeps_a_frozen_zero_conv_and_runs_the_identity(make_model):
    model = make_model("mamba2", "ACD")
    conv = model.backbone.layers[0].mixer.conv1d
    assert not conv.weight.requires_grad and conv.bias is None
    assert conv.weight.abs().max() == 0  # frozen at zero; the identity stands in for it


@pytest.mark.parametrize("arch", ["gla", "gdn", "mamba2"])
def test_canon_set_spellings_with_the_same_letters_build_the_same_model(make_model, arch):
    """'AbbCD' == 'AbCD' == 'DCbA' (membership only), 'bb' == 'b'."""
    ids = torch.randint(3, 37, (2, 9))
    for spellings in (["AbbCD", "AbCD", "DCbA"], ["bb", "b"]):
        models = [make_model(arch, s) for s in spellings]
        assert len({tuple(actual(m)) for m in models}) == 1
        with torch.no_grad():
            logits = [m(ids).logits for m in models]
        for other in logits[1:]:
            torch.testing.assert_close(other, logits[0])
