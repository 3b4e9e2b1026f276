"""canon.py: every formulation of a Canon layer against the reference (`canon_reference`, torch's grouped Conv1d),
forward and gradients, fp32 and bf16, kernel sizes 1-4, with and without a decode state."""

import math

import pytest
import torch
import torch.nn.functional as F

from huggingface import canon
from huggingface.canon import (
    ShortConvolution,
    canon_conv,
    canon_parts,
    canon_reference,
    canon_swiglu,
    canon_swiglu_recompute,
    choose_path,
    norm_canon,
    norm_then_canon,
    rms_normalize,
    shifted_conv,
)
from huggingface.layers import RMSNorm

TRAIN_PATHS = ["shifted", "recompute", "plain"] + (
    ["causal_conv1d"] if canon.causal_conv1d_fn is not None and torch.cuda.is_available() else []
)
DEVICE = "cuda" if len(TRAIN_PATHS) == 4 else "cpu"
KERNELS = [1, 2, 3, 4]
# bf16 results are compared with the fp32 reference on the same bf16 inputs: one bf16 rounding of outputs of size ~3
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=3e-2)}


def grads(out, inputs, seed=1):
    torch.manual_seed(seed)
    probe = torch.randn(out.shape, dtype=torch.float32, device=out.device)
    return torch.autograd.grad((out.float() * probe).sum(), inputs, retain_graph=True)


def leaf(t, dtype):
    return t.to(dtype).detach().requires_grad_()


def make_conv(K, dtype, bias=False, activation=False, residual=True, channels=6):
    torch.manual_seed(K)
    conv = ShortConvolution(channels, kernel_size=K, bias=bias, activation=activation, residual=residual)
    if bias:
        with torch.no_grad():
            conv.bias.normal_()
    return conv.to(DEVICE, dtype)


def reference_of(conv, x, context=None):
    w = conv.weight[:, 0, :]
    return canon_reference(x, w, conv.bias, conv.activation, conv.residual, context)


def check_close(actual, expected, dtype, what):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.float(), e.float(), **TOLERANCE[dtype], msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------------------------------------------
# The module: every path against the reference
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", KERNELS)
@pytest.mark.parametrize("path", TRAIN_PATHS)
@pytest.mark.parametrize("variant", ["residual", "bias-silu", "no-residual"])
def test_every_training_path_equals_the_reference(path, K, dtype, variant):
    if path == "causal_conv1d" and K == 1:
        pytest.skip("causal-conv1d serves K = 2..4 only")
    options = {"residual": {}, "bias-silu": dict(bias=True, activation=True), "no-residual": dict(residual=False)}
    conv = make_conv(K, dtype, **options[variant])
    x = leaf(torch.randn(2, 9, 6, device=DEVICE), dtype)
    params = [x] + list(conv.parameters())
    out = conv(x, path=path)
    expected = reference_of(conv, x)
    assert out.dtype == dtype
    check_close([out], [expected], dtype, f"{path} forward")
    check_close(grads(out, params), grads(expected, params), dtype, f"{path} gradients")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", KERNELS)
@pytest.mark.parametrize("masked", [False, True])
def test_decoding_in_pieces_through_the_state_equals_one_pass(K, dtype, masked):
    """Prefill in pieces ("context") and single tokens ("step") continue exactly where the last call stopped."""
    conv = make_conv(K, dtype, bias=True, activation=True)
    x = torch.randn(2, 11, 6, device=DEVICE).to(dtype)
    mask = torch.ones(2, 11, dtype=torch.long, device=DEVICE)
    if masked:
        mask[0, :3] = 0  # left padding of row 0: zero inputs, as if its sequence started later
    state = torch.zeros(2, K - 1, 6, device=DEVICE, dtype=dtype)
    pieces, start = [], 0
    for size in (4, 1, 1, 3, 2):
        piece_mask = mask[:, start : start + size] if masked else None
        assert choose_path(conv, x[:, start : start + size], piece_mask, state) == ("step" if size == 1 else "context")
        pieces.append(conv(x[:, start : start + size], attention_mask=piece_mask, conv_state=state))
        start += size
    with torch.no_grad():
        expected = reference_of(conv, x * mask[..., None].to(dtype))
    check_close([torch.cat(pieces, dim=1)], [expected], dtype, "decoding")
    # the state holds the last K-1 inputs, oldest first
    check_close([state], [x[:, x.shape[1] - (K - 1) :]], dtype, "state")


@pytest.mark.parametrize("K", KERNELS)
def test_context_path_gradients_equal_the_reference(K):
    """Cached prefill is differentiable (training with a cache, e.g. HF's use_cache=True in train mode)."""
    conv = make_conv(K, torch.float32)
    context, x = torch.randn(2, K - 1, 6, device=DEVICE), leaf(torch.randn(2, 5, 6, device=DEVICE), torch.float32)
    params = [x] + list(conv.parameters())
    out = conv(x, conv_state=context.clone())
    expected = reference_of(conv, x, context)
    check_close([out], [expected], torch.float32, "forward")
    check_close(grads(out, params), grads(expected, params), torch.float32, "gradients")


@pytest.mark.parametrize("K", KERNELS)
def test_document_resets_equal_the_reference_per_document(K):
    conv = make_conv(K, torch.float32, bias=True)
    x = torch.randn(2, 10, 6, device=DEVICE)
    starts = torch.zeros(2, 10, dtype=torch.bool, device=DEVICE)
    starts[0, [0, 4, 5]] = True  # a one-token document in the middle
    starts[1, [0, 8]] = True
    doc_ids = starts.cumsum(1)
    assert choose_path(conv, x, doc_ids=doc_ids) == "shifted"
    out = conv(x, doc_ids=doc_ids)
    with torch.no_grad():
        for row in range(2):
            edges = starts[row].nonzero().flatten().tolist() + [10]
            for a, b in zip(edges[:-1], edges[1:], strict=True):
                torch.testing.assert_close(out[row : row + 1, a:b], reference_of(conv, x[row : row + 1, a:b]))


@pytest.mark.parametrize("K", KERNELS)
def test_document_resets_gradients_equal_the_reference_per_document(K):
    """The shifted path's hand-written backward with document masks: gradients as if each document ran alone."""
    conv = make_conv(K, torch.float32, bias=True)
    x = leaf(torch.randn(2, 10, 6, device=DEVICE), torch.float32)
    starts = torch.zeros(2, 10, dtype=torch.bool, device=DEVICE)
    starts[0, [0, 4, 5]] = True
    starts[1, [0, 8]] = True
    params = [x] + list(conv.parameters())
    out = conv(x, doc_ids=starts.cumsum(1))
    rows = []
    for row in range(2):
        edges = starts[row].nonzero().flatten().tolist() + [10]
        pieces = [reference_of(conv, x[row : row + 1, a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        rows.append(torch.cat(pieces, dim=1))
    expected = torch.cat(rows)
    check_close(grads(out, params), grads(expected, params), torch.float32, "document-reset gradients")


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("T", [8, 9])  # 2 x 8 positions: the taps' gradient sums in two stages; 2 x 9: in one
@pytest.mark.parametrize("K", KERNELS)
def test_canon_swiglu_with_document_resets_equals_swiglu_of_the_reference_per_document(K, T, residual):
    """Canon-D fused with SwiGLU on the shifted path (one function that recomputes the conv in backward), with
    document masks: forward and gradients as if each document ran alone through the reference, then SwiGLU."""
    conv = make_conv(K, torch.float32, residual=residual, channels=8)
    gate_up = leaf(torch.randn(2, T, 8, device=DEVICE), torch.float32)
    starts = torch.zeros(2, T, dtype=torch.bool, device=DEVICE)
    starts[0, [0, 3, 4]] = True
    starts[1, [0, 6]] = True
    params = [gate_up, conv.weight]
    doc_ids = starts.cumsum(1)
    assert choose_path(conv, gate_up, doc_ids=doc_ids) == "shifted"
    out = canon_swiglu(gate_up, conv, doc_ids=doc_ids)
    rows = []
    for row in range(2):
        edges = starts[row].nonzero().flatten().tolist() + [T]
        pieces = [reference_of(conv, gate_up[row : row + 1, a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        rows.append(torch.cat(pieces, dim=1))
    gate, up = torch.cat(rows).chunk(2, dim=-1)
    expected = F.silu(gate) * up
    check_close([out], [expected], torch.float32, "forward")
    check_close(grads(out, params), grads(expected, params), torch.float32, "gradients")


def test_shifted_canon_swiglu_keeps_only_its_input_for_backward():
    """The shifted Canon-D with SwiGLU (what compile and document resets run) saves its input, the [K, C] taps and
    the document masks, nothing of the MLP's width computed from them: backward recomputes the conv."""
    conv = make_conv(4, torch.float32, channels=8)
    gate_up = leaf(torch.randn(2, 16, 8, device=DEVICE), torch.float32)
    doc_ids = torch.zeros(2, 16, dtype=torch.long, device=DEVICE)
    doc_ids[:, 9:] = 1
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = canon_swiglu(gate_up, conv, doc_ids=doc_ids)
    assert out.shape == (2, 16, 4)
    assert sorted(tuple(t.shape) for t in saved) == [(2, 16, 8), (3, 2, 16), (4, 8)]


@pytest.mark.parametrize("T", [8, 9])  # 2 x 8 positions: the taps' gradient sums in two stages; 2 x 9: in one
@pytest.mark.parametrize("K", KERNELS)
def test_shifted_gradients_in_either_reduction(K, T):
    conv = make_conv(K, torch.float32)
    x = leaf(torch.randn(2, T, 6, device=DEVICE), torch.float32)
    params = [x, conv.weight]
    out, expected = conv(x, path="shifted"), reference_of(conv, x)
    check_close(grads(out, params), grads(expected, params), torch.float32, "shifted gradients")


def test_decoding_follows_weight_updates():
    """The decode step keeps its taps between steps; a changed weight (in place, or a new tensor) is what it uses."""
    conv = make_conv(4, torch.float32)
    x = torch.randn(2, 1, 6, device=DEVICE)
    context = torch.randn(2, 3, 6, device=DEVICE)
    with torch.no_grad():
        for change in (None, lambda: conv.weight.mul_(-2.0), lambda: setattr(conv.weight, "data", conv.weight + 1)):
            if change is not None:
                change()
            out = conv(x, conv_state=context.clone())
            torch.testing.assert_close(out, reference_of(conv, x, context))


def test_padding_never_leaks_and_caller_tensor_is_untouched():
    conv = ShortConvolution(3, kernel_size=4)
    x = torch.randn(1, 6, 3)
    padded = torch.cat([torch.full((1, 2, 3), 1e4), x], dim=1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    before = padded.clone()
    out = conv(padded, attention_mask=mask)
    torch.testing.assert_close(out[:, 2:], conv(x))
    assert torch.equal(padded, before)


def test_reference_is_torch_conv1d_with_left_padding():
    """The oracle itself, against a loop over positions written from the definition."""
    x, w = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    loop = torch.stack([sum(w[:, 3 - s] * x[:, t - s] for s in range(4) if t >= s) for t in range(5)], dim=1)
    torch.testing.assert_close(canon_reference(x, w, residual=False), loop)
    torch.testing.assert_close(shifted_conv(x, w), loop)


# ----------------------------------------------------------------------------------------------------------------
# The sites with their neighbours: norm -> Canon (A, C) and Canon -> SwiGLU (D), on every path
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def forced_path(monkeypatch):
    def force(path):
        monkeypatch.setattr(canon, "choose_path", lambda *args, **kwargs: path)

    return force


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", KERNELS)
@pytest.mark.parametrize("path", TRAIN_PATHS)
def test_norm_then_canon_equals_norm_then_reference(path, K, dtype, forced_path):
    if path == "causal_conv1d" and K == 1:
        pytest.skip("causal-conv1d serves K = 2..4 only")
    conv = make_conv(K, dtype)
    h = leaf(3 * torch.randn(2, 9, 6, device=DEVICE), dtype)
    norm_weight = leaf(1 + 0.3 * torch.randn(6, device=DEVICE), dtype)
    params = [h, norm_weight, conv.weight]
    expected = reference_of(conv, rms_normalize(h, norm_weight, 1e-5)[0])
    forced_path(path)
    out = norm_then_canon(h, norm_weight, 1e-5, conv)
    check_close([out], [expected], dtype, f"{path} forward")
    check_close(grads(out, params), grads(expected, params), dtype, f"{path} gradients")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", KERNELS)
@pytest.mark.parametrize("path", TRAIN_PATHS)
def test_canon_swiglu_equals_reference_then_swiglu(path, K, dtype, forced_path):
    if path == "causal_conv1d" and K == 1:
        pytest.skip("causal-conv1d serves K = 2..4 only")
    conv = make_conv(K, dtype, channels=8)
    gate_up = leaf(torch.randn(2, 9, 8, device=DEVICE), dtype)
    params = [gate_up, conv.weight]
    gate, up = reference_of(conv, gate_up).float().chunk(2, dim=-1)
    expected = F.silu(gate) * up
    forced_path(path)
    out = canon_swiglu(gate_up, conv)
    check_close([out], [expected], dtype, f"{path} forward")
    check_close(grads(out, params), grads(expected, params), dtype, f"{path} gradients")


@pytest.mark.parametrize("K", KERNELS)
@pytest.mark.parametrize("path", TRAIN_PATHS)
@pytest.mark.parametrize("variant", ["residual", "bias-silu", "qk-norm"])
def test_canon_parts_equal_the_layer_on_the_concatenation(path, K, variant, forced_path):
    """Canon-B on (q, k, v): the parts' outputs are the layer's output on [q | k | v], split; with the QK-norm
    (`norms` on the first two parts) the layer's output on [norm(q) | norm(k) | v]."""
    if path == "causal_conv1d" and K == 1:
        pytest.skip("causal-conv1d serves K = 2..4 only")
    conv = make_conv(
        K, torch.float32, channels=9, **(dict(bias=True, activation=True) if variant == "bias-silu" else {})
    )
    parts = [leaf(3 * torch.randn(2, 7, c, device=DEVICE), torch.float32) for c in (4, 3, 2)]
    params = parts + list(conv.parameters())
    norms, normed = None, parts
    if variant == "qk-norm":
        norms = [RMSNorm(c).to(DEVICE) for c in (4, 3)] + [None]
        for norm in norms[:2]:
            with torch.no_grad():
                norm.weight.normal_(1, 0.3)
            params.append(norm.weight)
        normed = [p if n is None else rms_normalize(p, n.weight, n.eps)[0] for p, n in zip(parts, norms, strict=True)]
    expected = reference_of(conv, torch.cat(normed, dim=-1))
    forced_path(path)
    out = torch.cat(canon_parts(conv, parts, norms=norms), dim=-1)
    check_close([out], [expected], torch.float32, f"{path} forward")
    check_close(grads(out, params), grads(expected, params), torch.float32, f"{path} gradients")


def test_sites_continue_through_a_cache():
    """norm_then_canon / canon_swiglu / canon_call keep their states in any object with a `conv_states` dict."""

    class Cache:
        conv_states = {}

    conv, norm_weight = make_conv(3, torch.float32), torch.ones(6, device=DEVICE)
    h = torch.randn(2, 7, 6, device=DEVICE)
    cache = Cache()
    pieces = [norm_then_canon(piece, norm_weight, 1e-5, conv, cache, (0, "canonA")) for piece in h.split([3, 1, 3], 1)]
    with torch.no_grad():
        expected = reference_of(conv, rms_normalize(h, norm_weight, 1e-5)[0])
    torch.testing.assert_close(torch.cat(pieces, dim=1), expected)
    assert list(cache.conv_states) == [(0, "canonA")]


# ----------------------------------------------------------------------------------------------------------------
# The chunked Functions at every chunk boundary (fp64 gradcheck)
# ----------------------------------------------------------------------------------------------------------------


# rows < T: blocks within a sequence; rows >= T: blocks of rows // T whole sequences (7, 14: one, two of three)
@pytest.mark.parametrize("K, rows", [(1, None), (2, None), (4, None), (4, 1), (4, 2), (3, 4), (4, 7), (3, 14)])
def test_chunked_conv_gradcheck(K, rows):
    x = torch.randn(3, 7, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: canon_conv(*a, rows), (x, w))
    torch.testing.assert_close(canon_conv(x, w, rows), canon_reference(x, w, residual=False))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("rows", [None, 1, 4, 12])
def test_chunked_norm_canon_gradcheck(residual, rows):
    h = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    nw = (1 + 0.3 * torch.randn(5, dtype=torch.float64)).requires_grad_()
    cw = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: norm_canon(*a, 1e-5, residual, rows), (h, nw, cw))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("K, rows", [(3, None), (3, 2), (4, 1), (4, 3), (2, 5), (1, 2), (3, 7), (4, 14)])
def test_chunked_canon_swiglu_gradcheck(residual, K, rows):
    gate_up = torch.randn(3, 7, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: canon_swiglu_recompute(*a, residual, rows), (gate_up, w))


# ----------------------------------------------------------------------------------------------------------------
# Dispatch, init, arguments
# ----------------------------------------------------------------------------------------------------------------


def test_choose_path_per_mode(monkeypatch):
    conv, x = ShortConvolution(4, kernel_size=4), torch.randn(1, 5, 4)
    assert choose_path(conv, x) == "recompute"
    assert choose_path(conv, x, mask=torch.ones(1, 5)) == "plain"
    assert choose_path(ShortConvolution(4, activation=True), x) == "plain"
    monkeypatch.setattr(canon, "_compiling", lambda: True)
    assert choose_path(conv, x) == "shifted"
    assert choose_path(conv, x[:, :1], state=torch.zeros(1, 3, 4)) == "step"


@pytest.mark.parametrize("K, std", [(2, 1 / math.sqrt(6)), (3, 1 / 3), (4, 1 / math.sqrt(12))])
def test_default_pytorch_init(K, std):
    torch.manual_seed(0)
    conv = ShortConvolution(4096, kernel_size=K, bias=True)
    w = conv.weight
    assert w.shape == (4096, 1, K)
    assert w.abs().max() <= 1 / math.sqrt(K)
    assert abs(w.std().item() - std) < 0.01
    assert torch.equal(conv.bias, torch.zeros(4096))  # zero bias keeps a fresh layer residual


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(ValueError, match="kernel_size=0"):
        ShortConvolution(4, kernel_size=0)
    with pytest.raises(ValueError, match="path='fast'"):
        ShortConvolution(4)(torch.randn(1, 3, 4), path="fast")
