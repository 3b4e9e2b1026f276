"""On a CUDA device: the optional kernels (flash-linear-attention, mamba_ssm) against the plain chunked forms, and a
model's cached decoding against its full forward. Skipped without a GPU."""

import pytest
import torch
import torch.nn.functional as F

from huggingface_linear import linear_recurrences as lr

from .conftest import ARCHS, VOCAB

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def close(kernel_out, plain_out, tol):
    torch.testing.assert_close(kernel_out.float().cpu(), plain_out.float(), rtol=tol, atol=tol)


def test_dispatch_on_cuda_matches_the_plain_forms():
    torch.manual_seed(0)
    B, T, H, K, V = 2, 200, 2, 64, 128
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    gk = F.logsigmoid(torch.randn(B, T, H, K)) / 16
    g, beta = F.logsigmoid(torch.randn(B, T, H)), torch.rand(B, T, H)
    cuda = lambda *ts: [t.cuda() for t in ts]  # noqa: E731
    out, state = lr.gla(*cuda(q, k, v, gk), output_final_state=True)
    ref, ref_state = lr.chunk_gla(q, k, v, gk, output_final_state=True)
    close(out, ref, 2e-3)
    close(state, ref_state, 2e-3)
    half = [t.bfloat16() for t in cuda(q, k, v)]
    out, _ = lr.gated_delta_rule(*half, *cuda(g, beta))  # the fla kernel when installed (bf16 only)
    ref, _ = lr.gated_delta_rule(q, k, v, g, beta)
    close(out, ref, 5e-2)
    x, dt = torch.randn(B, T, H, V), F.softplus(torch.randn(B, T, H))
    A, D, Bm, Cm = -torch.rand(H), torch.randn(H), torch.randn(B, T, 1, K), torch.randn(B, T, 1, K)
    out, state = lr.ssd(*cuda(x, dt, A, Bm, Cm, D), output_final_state=True)
    ref, ref_state = lr.chunk_ssd(x, dt, A, Bm, Cm, D, output_final_state=True)
    close(out, ref, 2e-3)
    close(state, ref_state, 2e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_decoding_on_cuda_equals_the_full_forward(make_model, arch):
    from huggingface_linear import LinearCanonCache

    model = make_model(arch, "AbbCD").cuda()
    ids = torch.randint(3, VOCAB, (2, 80), device="cuda")
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = LinearCanonCache()
        pieces = [model(ids[:, :70], cache=cache).logits]
        pieces += [model(ids[:, t : t + 1], cache=cache).logits for t in range(70, 80)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-3, atol=1e-3)
