import itertools

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from huggingface import CanonCache, LlamaCanonForCausalLM, canon
from huggingface.transformers_compat import CACHE_NAME, returned_cache

from ..generation_oracles import (
    check_beam_search_with_end_of_sequence,
    check_left_padded_rows_equal_rows_run_alone,
    has_chunked_prefill,
    reference_beam_search,
)

# canon_set x kernel x {full, partial RoPE} x qk_norm; head_dim is 8, so rope_dim 4 is partial. Without Canon
# layers the kernel size plays no part, so that case runs once.
MATRIX = [
    (canon_set, kernel, rope_dim, qk_norm)
    for canon_set, kernel, rope_dim, qk_norm in itertools.product(
        ["", "A", "AC", "ABCD"], [2, 3, 4], [None, 4], [False, True]
    )
    if canon_set or kernel == 4
]
MATRIX_IDS = [f"canon{c or '-'}-k{k}-rope{r or 'full'}-qk{int(q)}" for c, k, r, q in MATRIX]


def matrix_model(make_model, canon_set, kernel, rope_dim, qk_norm, **extra):
    return make_model(canon_set=canon_set, canon_kernel=kernel, rope_dim=rope_dim, qk_norm=qk_norm, **extra)


EXPECTED_NAMES = [
    ("model.embed_tokens.weight", ("V", "d")),
    ("model.layers.0.self_attn.q_proj.weight", ("H*hd", "d")),
    ("model.layers.0.self_attn.k_proj.weight", ("KV*hd", "d")),
    ("model.layers.0.self_attn.v_proj.weight", ("KV*hd", "d")),
    ("model.layers.0.self_attn.o_proj.weight", ("d", "H*hd")),
    ("model.layers.0.self_attn.q_norm.weight", ("H*hd",)),
    ("model.layers.0.self_attn.k_norm.weight", ("KV*hd",)),
    ("model.layers.0.self_attn.canonB.weight", ("(H+2KV)*hd", 1, "K")),
    ("model.layers.0.mlp.gate_proj.weight", ("F", "d")),
    ("model.layers.0.mlp.up_proj.weight", ("F", "d")),
    ("model.layers.0.mlp.down_proj.weight", ("d", "F")),
    ("model.layers.0.mlp.canonD.weight", ("2F", 1, "K")),
    ("model.layers.0.input_layernorm.weight", ("d",)),
    ("model.layers.0.post_attention_layernorm.weight", ("d",)),
    ("model.layers.0.canonA.weight", ("d", 1, "K")),
    ("model.layers.0.canonC.weight", ("d", 1, "K")),
]


def test_state_dict_names_order_and_shapes_match_the_reference(make_model):
    model = make_model(canon_set="ABCD", qk_norm=True, num_hidden_layers=1, head_dim=12)
    c = model.config
    sizes = {
        "V": c.vocab_size, "d": c.hidden_size, "F": c.intermediate_size, "2F": 2 * c.intermediate_size, "K": 4,
        "H*hd": 4 * 12, "KV*hd": 2 * 12, "(H+2KV)*hd": 8 * 12, 1: 1,
    }  # fmt: skip
    expected = [(name, tuple(sizes[s] for s in shape)) for name, shape in EXPECTED_NAMES]
    expected += [("model.norm.weight", (c.hidden_size,)), ("lm_head.weight", (c.vocab_size, c.hidden_size))]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected


def test_canon_weights_keep_pytorch_default_init(make_config):
    config = make_config(canon_set="ABCD", hidden_size=256, intermediate_size=512, num_attention_heads=4)
    model = LlamaCanonForCausalLM(config)
    for name, param in model.named_parameters():
        if ".canon" in name:
            assert abs(param.std().item() - 0.2887) < 0.02, name
            assert param.abs().max().item() <= 0.5
        elif name.endswith("proj.weight"):
            assert abs(param.std().item() - config.initializer_range) < 0.03, name


def incremental_logits(model, ids, chunks):
    cache, pieces, start = CanonCache(), [], 0
    for size in chunks:
        out = model(ids[:, start : start + size], cache=cache, use_cache=True)
        pieces.append(out.logits)
        start += size
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("canon_set, kernel, rope_dim, qk_norm", MATRIX, ids=MATRIX_IDS)
def test_incremental_decoding_equals_full_forward(make_model, canon_set, kernel, rope_dim, qk_norm):
    model = matrix_model(make_model, canon_set, kernel, rope_dim, qk_norm)
    ids = torch.randint(3, 61, (2, 13))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        one_by_one = incremental_logits(model, ids, [5] + [1] * 8)
        chunked = incremental_logits(model, ids, [3, 4, 1, 5])  # chunked prefill
    torch.testing.assert_close(one_by_one, full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(chunked, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("canon_set, kernel, rope_dim, qk_norm", MATRIX, ids=MATRIX_IDS)
def test_left_padded_rows_equal_rows_run_alone(make_model, canon_set, kernel, rope_dim, qk_norm):
    model = matrix_model(make_model, canon_set, kernel, rope_dim, qk_norm)
    check_left_padded_rows_equal_rows_run_alone(model, 61, pass_position_ids=True)


@pytest.mark.parametrize("canon_set", ["A", "ABCD"])
@pytest.mark.parametrize("activation", [False, True])
def test_left_padding_with_biases_everywhere(make_model, canon_set, activation):
    """Nonzero projection and Canon biases make padded positions nonzero even for a zero input."""
    model = make_model(
        canon_set=canon_set, canon_activation=activation, canon_bias=True, attention_bias=True, mlp_bias=True
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("canon" + name.split(".canon")[-1]) and name.endswith("bias"):
                param.normal_()
    check_left_padded_rows_equal_rows_run_alone(model, 61)


@pytest.mark.parametrize("canon_set, kernel, rope_dim, qk_norm", MATRIX, ids=MATRIX_IDS)
def test_beam_search_equals_cache_free_search(make_model, canon_set, kernel, rope_dim, qk_norm):
    model = matrix_model(make_model, canon_set, kernel, rope_dim, qk_norm)
    prompt = torch.randint(3, 61, (6,))
    out = model.generate(
        prompt[None], max_new_tokens=6, num_beams=3, do_sample=False, eos_token_id=None, length_penalty=0.0
    )
    assert out[0].tolist() == reference_beam_search(model, prompt, num_beams=3, steps=6)


@pytest.mark.parametrize("canon_set", ["AC", "ABCD"])
@pytest.mark.parametrize("length_penalty", [-1.0, 0.5])
@pytest.mark.parametrize("bias", [False, True])
def test_beam_search_with_end_of_sequence_and_length_penalty(make_model, canon_set, length_penalty, bias):
    model = make_model(canon_set=canon_set, rope_dim=4, attention_bias=bias, mlp_bias=bias, canon_bias=bias)
    check_beam_search_with_end_of_sequence(model, 61, length_penalty)


@pytest.mark.parametrize("canon_set", ["AC", "ABCD"])
def test_generate_modes_agree_with_cache_free_generation(make_model, canon_set):
    model = make_model(canon_set=canon_set, rope_dim=4, qk_norm=True)
    prompt = torch.randint(3, 61, (2, 7))
    kwargs = dict(max_new_tokens=8, eos_token_id=None)
    greedy = model.generate(prompt, do_sample=False, **kwargs)
    assert torch.equal(greedy, model.generate(prompt, do_sample=False, use_cache=False, **kwargs))
    torch.manual_seed(5)
    sampled = model.generate(prompt, do_sample=True, top_k=10, **kwargs)
    torch.manual_seed(5)
    assert torch.equal(sampled, model.generate(prompt, do_sample=True, top_k=10, use_cache=False, **kwargs))


@has_chunked_prefill
def test_chunked_prefill_generates_what_whole_prefill_does(make_model):
    model = make_model(canon_set="ABCD", rope_dim=4, qk_norm=True)
    prompt = torch.randint(3, 61, (2, 7))
    kwargs = dict(max_new_tokens=8, eos_token_id=None, do_sample=False)
    assert torch.equal(model.generate(prompt, **kwargs), model.generate(prompt, prefill_chunk_size=3, **kwargs))


def test_generate_continues_from_a_returned_cache(make_model):
    model = make_model(canon_set="ABCD", rope_dim=4)
    prompt = torch.randint(3, 61, (1, 6))
    first = model.generate(prompt, max_new_tokens=4, do_sample=False, eos_token_id=None, return_dict_in_generate=True)
    more = torch.cat([first.sequences, torch.randint(3, 61, (1, 3))], dim=1)
    resumed = model.generate(
        more, **{CACHE_NAME: returned_cache(first)}, max_new_tokens=5, do_sample=False, eos_token_id=None
    )
    fresh = model.generate(more, max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert torch.equal(resumed, fresh)


def test_the_cache_is_taken_under_either_keyword_and_returned_under_this_releases_name(make_model):
    model = make_model(canon_set="ABCD", rope_dim=4)
    ids = torch.randint(3, 61, (2, 9))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        for keyword in ("cache", "past_key_values"):
            cache = CanonCache()
            first = model(ids[:, :5], **{keyword: cache}, use_cache=True)
            assert returned_cache(first) is cache
            rest = model(ids[:, 5:], **{keyword: cache}, use_cache=True).logits
            torch.testing.assert_close(torch.cat([first.logits, rest], dim=1), full, rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="two different caches"):
            model(ids, cache=CanonCache(), past_key_values=CanonCache())


def test_plain_dynamic_cache_is_rejected_for_canon_models(make_model):
    model = make_model(canon_set="A")
    with pytest.raises(TypeError, match="CanonCache; got DynamicCache"):
        model(torch.randint(3, 61, (1, 4)), cache=DynamicCache())


def test_cache_crop_is_refused_once_canon_states_exist(make_model):
    model = make_model(canon_set="A")
    cache = returned_cache(model(torch.randint(3, 61, (1, 4)), use_cache=True))
    with pytest.raises(NotImplementedError, match="cannot be cropped"):
        cache.crop(2)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_eager_and_sdpa_agree_with_padding(make_model, qk_norm):
    ids = torch.randint(3, 61, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    logits = {}
    for impl in ("eager", "sdpa"):
        model = make_model(canon_set="ABCD", rope_dim=4, qk_norm=qk_norm, attn_implementation=impl)
        with torch.no_grad():
            logits[impl] = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(logits["eager"][0], logits["sdpa"][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits["eager"][1, 3:], logits["sdpa"][1, 3:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tie", [False, True])
def test_without_canon_equals_transformers_llama(make_model, tie):
    ours = make_model(canon_set="", tie_word_embeddings=tie)
    config = LlamaConfig(**{k: v for k, v in ours.config.to_dict().items() if k in LlamaConfig().to_dict()})
    config.tie_word_embeddings = tie
    theirs = LlamaForCausalLM(config).eval()
    result = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    ids = torch.randint(3, 61, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=1e-5, atol=1e-5)
    if tie:
        assert ours.lm_head.weight is ours.model.embed_tokens.weight


@pytest.mark.parametrize("canon_set", ["ABCD", "AC"])
@pytest.mark.parametrize("activation", [False, True])
@pytest.mark.parametrize("qk_norm, bias", [(True, False), (False, True)], ids=["qk_norm", "bias"])
def test_training_gradients_match_the_cached_path_and_checkpointing(make_model, canon_set, activation, qk_norm, bias):
    """The training path (recomputing fusions, one GEMM for [q|k|v] and [gate|up]) must give the gradients of the
    plain per-site path that decoding uses."""
    ids = torch.randint(3, 61, (2, 10))
    grads = {}
    for mode in ("fused", "plain", "checkpointed"):
        model = make_model(
            canon_set=canon_set,
            canon_activation=activation,
            rope_dim=4,
            qk_norm=qk_norm,
            attention_bias=bias,
            mlp_bias=bias,
        ).double()
        if mode == "checkpointed":
            # newer transformers renamed it (the old name warns)
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model.train()
        if mode == "plain":  # a cache forces the per-site path that decoding uses
            loss = model(ids, labels=ids, cache=CanonCache(), use_cache=True).loss
        else:
            loss = model(ids, labels=ids).loss
        loss.backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for mode in ("plain", "checkpointed"):
        for name, grad in grads["fused"].items():
            torch.testing.assert_close(grad, grads[mode][name], rtol=1e-9, atol=1e-12, msg=f"{mode} {name}")


@pytest.mark.skipif(
    canon.causal_conv1d_fn is None or not torch.cuda.is_available(), reason="needs causal-conv1d and CUDA"
)
def test_cuda_fast_path_model_matches_cpu(make_model):
    """On CUDA the Canon layers run causal-conv1d (prefill and decode); logits and gradients match the CPU path."""
    cpu = make_model(canon_set="ABCD", rope_dim=4, qk_norm=True)
    gpu = make_model(canon_set="ABCD", rope_dim=4, qk_norm=True).cuda()
    ids = torch.randint(3, 61, (2, 13))
    with torch.no_grad():
        full = gpu(ids.cuda()).logits
        torch.testing.assert_close(full.cpu(), cpu(ids).logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(incremental_logits(gpu, ids.cuda(), [5] + [1] * 8), full, rtol=1e-4, atol=1e-4)
    assert torch.equal(
        gpu.generate(ids.cuda(), max_new_tokens=6, num_beams=2, eos_token_id=None).cpu(),
        cpu.generate(ids, max_new_tokens=6, num_beams=2, eos_token_id=None),
    )
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        model.train()
        model(ids.to(device), labels=ids.to(device)).loss.backward()
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_bf16_training_step_tracks_fp32(make_model):
    ids = torch.randint(3, 61, (2, 16))
    losses, grads = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        model = make_model(canon_set="ABCD", rope_dim=4, qk_norm=True).to(dtype).train()
        loss = model(ids, labels=ids).loss
        loss.backward()
        losses[dtype] = loss.item()
        grads[dtype] = torch.cat([p.grad.float().flatten() for p in model.parameters()])
        assert all(p.grad.dtype == dtype for p in model.parameters())
    assert abs(losses[torch.bfloat16] - losses[torch.float32]) < 0.05 * losses[torch.float32]
    cosine = torch.nn.functional.cosine_similarity(grads[torch.bfloat16], grads[torch.float32], dim=0)
    assert cosine > 0.99


def test_wrapped_mlp_projections_still_run_as_modules_in_training(make_model):
    """The merged [gate | up] GEMM must not bypass a wrapped projection (e.g. an adapter)."""

    class Scaled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return 2 * self.inner(x)

    ids = torch.randint(3, 61, (2, 9))
    model = make_model(canon_set="ABCD").train()
    with torch.no_grad():
        plain = model(ids, labels=ids).loss
    for layer in model.model.layers:
        layer.mlp.up_proj = Scaled(layer.mlp.up_proj)
    with torch.no_grad():
        wrapped = model(ids, labels=ids).loss
        cached = model(ids, labels=ids, cache=CanonCache(), use_cache=True).loss
    assert not torch.allclose(wrapped, plain)
    torch.testing.assert_close(wrapped, cached)
