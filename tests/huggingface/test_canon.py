import math

import pytest
import torch
import torch.nn.functional as F

from huggingface import canon_helper
from huggingface.canon_helper import ShortConvolution, canon_conv, canon_swiglu, norm_canon
from huggingface.modeling_llama_canon import LlamaRMSNorm


def conv1d_reference(x, weight):
    """Independent oracle: torch's own grouped Conv1d with left padding K-1, on [B, C, T]."""
    C, K = weight.shape
    return F.conv1d(F.pad(x.transpose(1, 2), (K - 1, 0)), weight[:, None, :], groups=C).transpose(1, 2)


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("T", [1, 3, 9])
def test_plain_conv_equals_torch_conv1d(K, T):
    x, w = torch.randn(2, T, 6, dtype=torch.float64), torch.randn(6, K, dtype=torch.float64)
    torch.testing.assert_close(canon_conv(x, w), conv1d_reference(x, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K, rows", [(1, None), (2, None), (4, None), (4, 1), (4, 2), (3, 4)])
def test_conv_gradients_and_values_in_chunks(K, rows):
    """Chunks shorter than the kernel exercise every chunk-boundary case."""
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: canon_conv(*a, rows), (x, w))
    torch.testing.assert_close(canon_conv(x, w, rows), conv1d_reference(x, w))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("rows", [None, 1, 4])
def test_norm_canon_gradients_and_values(residual, rows):
    h = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    nw = (1 + 0.3 * torch.randn(5, dtype=torch.float64)).requires_grad_()
    cw = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: norm_canon(*a, 1e-5, residual, rows), (h, nw, cw))
    norm = LlamaRMSNorm(5, eps=1e-5).double()
    norm.weight.data.copy_(nw)
    n = norm(h)
    expected = conv1d_reference(n, cw) + (n if residual else 0)
    torch.testing.assert_close(norm_canon(h, nw, cw, 1e-5, residual, rows), expected)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("K, rows", [(3, None), (3, 2), (4, 1), (4, 3), (2, 5), (1, 2)])
def test_canon_swiglu_gradients_and_values(residual, K, rows):
    """Also in chunks shorter than the kernel, so every chunk-boundary case is exercised."""
    gate_up = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, K, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: canon_swiglu(*a, residual, rows), (gate_up, w))
    g, u = (conv1d_reference(gate_up, w) + (gate_up if residual else 0)).chunk(2, dim=-1)
    torch.testing.assert_close(canon_swiglu(gate_up, w, residual, rows), F.silu(g) * u)


@pytest.mark.parametrize("K, std", [(2, 1 / math.sqrt(6)), (3, 1 / 3), (4, 1 / math.sqrt(12))])
def test_default_pytorch_init(K, std):
    torch.manual_seed(0)
    conv = ShortConvolution(4096, kernel_size=K)
    w = conv.weight
    assert w.shape == (4096, 1, K)
    assert w.abs().max() <= 1 / math.sqrt(K)
    assert abs(w.std().item() - std) < 0.01


@pytest.mark.parametrize("activation", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_module_formula(activation, residual, bias):
    conv = ShortConvolution(5, kernel_size=3, bias=bias, activation=activation, residual=residual).double()
    if bias:
        assert torch.equal(conv.bias, torch.zeros(5, dtype=torch.float64))  # zero-init keeps a fresh layer residual
        conv.bias.data.normal_()
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    y = conv1d_reference(x, conv.weight[:, 0]) + (conv.bias if bias else 0)
    y = F.silu(y) if activation else y
    torch.testing.assert_close(conv(x), y + x if residual else y)


@pytest.mark.parametrize("K", [1, 2, 4, 6])
def test_state_carries_left_context_across_chunks(K):
    """Feeding a sequence in chunks of any size through the conv state equals one full pass."""
    conv = ShortConvolution(3, kernel_size=K, activation=True).double()
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    full = conv(x)
    state = torch.zeros(2, K - 1, 3, dtype=torch.float64)
    pieces = [conv(chunk, conv_state=state) for chunk in x.split([4, 1, 1, 3, 2], dim=1)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_padding_never_leaks_and_caller_tensor_is_untouched():
    conv = ShortConvolution(3, kernel_size=4)
    x = torch.randn(1, 6, 3)
    padded = torch.cat([torch.full((1, 2, 3), 1e4), x], dim=1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    before = padded.clone()
    out = conv(padded, attention_mask=mask)
    torch.testing.assert_close(out[:, 2:], conv(x))
    assert torch.equal(padded, before)


def test_kernel_below_one_is_rejected():
    with pytest.raises(ValueError, match="kernel_size=0"):
        ShortConvolution(4, kernel_size=0)


@pytest.mark.skipif(
    canon_helper.causal_conv1d_fn is None or not torch.cuda.is_available(), reason="needs causal-conv1d and CUDA"
)
@pytest.mark.parametrize("K", [2, 3, 4])
def test_fast_path_equals_plain_path(K):
    conv = ShortConvolution(64, kernel_size=K).cuda()
    x = torch.randn(2, 33, 64, device="cuda", requires_grad=True)
    fast, plain = conv(x, use_fast_path=True), conv(x, use_fast_path=False)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    g_fast = torch.autograd.grad(fast.sum(), (x, conv.weight))
    g_plain = torch.autograd.grad(plain.sum(), (x, conv.weight))
    for a, b in zip(g_fast, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
