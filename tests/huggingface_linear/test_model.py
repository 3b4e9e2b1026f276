"""Behaviour of the three models: cached decoding equals the full forward (Canon and conv states included), padding,
generate() (greedy, sampling, beam search), initialisation, a tiny training run."""

import math

import pytest
import torch

from huggingface_linear import LinearCanonCache
from huggingface_linear.transformers_compat import CACHE_NAME, returned_cache

from ..generation_oracles import (
    check_beam_search_with_end_of_sequence,
    check_left_padded_rows_equal_rows_run_alone,
    has_chunked_prefill,
    reference_beam_search,
)
from .conftest import ARCHS, VOCAB

CANON_SETS = ["", "bb", "A", "AbbCD", "ABCD", "bB"]
DECODE_MATRIX = [(arch, c) for arch in ARCHS for c in CANON_SETS]


def incremental_logits(model, ids, chunks):
    cache, pieces, start = LinearCanonCache(), [], 0
    for size in chunks:
        out = model(ids[:, start : start + size], cache=cache, use_cache=True)
        assert returned_cache(out) is cache
        pieces.append(out.logits)
        start += size
    assert cache.get_seq_length() == ids.shape[1]
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("arch, canon_set", DECODE_MATRIX)
def test_cached_decoding_equals_the_full_forward(make_model, arch, canon_set):
    """Token by token after a prefill, and chunked prefill: every Canon/conv/recurrent state carries over
    (the layer-0 Canon-A state included)."""
    model = make_model(arch, canon_set).double()
    ids = torch.randint(3, VOCAB, (2, 13))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        one_by_one = incremental_logits(model, ids, [5] + [1] * 8)
        chunked = incremental_logits(model, ids, [3, 4, 1, 5])
    torch.testing.assert_close(one_by_one, full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(chunked, full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("arch", ARCHS)
def test_canon_bias_and_activation_decode_equal_the_full_forward(make_model, arch):
    """canon_bias (an assert in the reference) and canon_activation take the unfused path; states still carry."""
    model = make_model(arch, "AbBCD", canon_bias=True, canon_activation=True).double()
    assert model.get_input_embeddings() is not None and any(".canonB.bias" in n for n, _ in model.named_parameters())
    ids = torch.randint(3, VOCAB, (2, 9))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        torch.testing.assert_close(incremental_logits(model, ids, [4, 1, 1, 3]), full, rtol=1e-10, atol=1e-10)


def test_gla_feature_map_clamp_and_ungated_output_decode_equal_the_full_forward(make_model):
    model = make_model("gla", "AbbCD", feature_map="relu", clamp_min=-0.05, use_output_gate=False).double()
    assert "model.layers.0.attn.g_norm.weight" in model.state_dict()  # no gate: fla's plain g_norm
    ids = torch.randint(3, VOCAB, (2, 9))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        torch.testing.assert_close(incremental_logits(model, ids, [5, 1, 1, 1, 1]), full, rtol=1e-10, atol=1e-10)


def test_layer_zero_canon_a_state_survives_the_prefill(make_model):
    """A prefill that drops layer 0's Canon-A state, in isolation: the first decode step after the prefill needs that
    history; zeroing that history changes the logits, keeping it matches the full forward."""
    model = make_model("gla", "A").double()
    ids = torch.randint(3, VOCAB, (1, 8))
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        cache = LinearCanonCache()
        model(ids[:, :7], cache=cache)
        assert cache.get_state(0, "canonA").abs().sum() > 0
        kept = model(ids[:, 7:], cache=cache).logits[:, -1]
        cache = LinearCanonCache()
        model(ids[:, :7], cache=cache)
        cache.get_state(0, "canonA").zero_()
        lost = model(ids[:, 7:], cache=cache).logits[:, -1]
    torch.testing.assert_close(kept, full, rtol=1e-10, atol=1e-10)
    assert (lost - full).abs().max() > 1e-4


@pytest.mark.parametrize("arch, canon_set", [(a, c) for a in ARCHS for c in ("AbbCD", "ABCD")])
def test_left_padded_rows_equal_rows_run_alone(make_model, arch, canon_set):
    check_left_padded_rows_equal_rows_run_alone(make_model(arch, canon_set), VOCAB)


@pytest.mark.parametrize("arch, canon_set", [(a, c) for a in ARCHS for c in ("AbbCD", "ABCD")])
def test_beam_search_equals_cache_free_search(make_model, arch, canon_set):
    model = make_model(arch, canon_set)
    prompt = torch.randint(3, VOCAB, (6,))
    out = model.generate(prompt[None], max_new_tokens=5, num_beams=3, do_sample=False, eos_token_id=None,
                         length_penalty=0.0)  # fmt: skip
    assert out[0].tolist() == reference_beam_search(model, prompt, num_beams=3, steps=5)


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_modes_agree_with_cache_free_generation(make_model, arch):
    model = make_model(arch, "AbbCD")
    prompt = torch.randint(3, VOCAB, (2, 7))
    kwargs = dict(max_new_tokens=6, eos_token_id=None)
    greedy = model.generate(prompt, do_sample=False, **kwargs)
    assert torch.equal(greedy, model.generate(prompt, do_sample=False, use_cache=False, **kwargs))
    torch.manual_seed(5)
    sampled = model.generate(prompt, do_sample=True, top_k=10, **kwargs)
    torch.manual_seed(5)
    assert torch.equal(sampled, model.generate(prompt, do_sample=True, top_k=10, use_cache=False, **kwargs))


@has_chunked_prefill
@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_prefill_generates_what_whole_prefill_does(make_model, arch):
    model = make_model(arch, "AbbCD")
    prompt = torch.randint(3, VOCAB, (2, 7))
    kwargs = dict(max_new_tokens=6, eos_token_id=None, do_sample=False)
    assert torch.equal(model.generate(prompt, **kwargs), model.generate(prompt, prefill_chunk_size=3, **kwargs))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("length_penalty", [-1.0, 0.5])
def test_beam_search_with_end_of_sequence_and_length_penalty(make_model, arch, length_penalty):
    check_beam_search_with_end_of_sequence(make_model(arch, "AbbCD"), VOCAB, length_penalty)


@pytest.mark.parametrize("arch", ARCHS)
def test_assisted_decoding_is_refused(make_model, arch):
    prompt = torch.randint(3, VOCAB, (1, 5))
    with pytest.raises(ValueError, match="(?i)assisted"):
        make_model(arch).generate(prompt, assistant_model=make_model(arch, seed=1), max_new_tokens=3, do_sample=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_continues_from_a_returned_cache(make_model, arch):
    model = make_model(arch, "AbbCD")
    prompt = torch.randint(3, VOCAB, (1, 6))
    kwargs = dict(do_sample=False, eos_token_id=None)
    first = model.generate(prompt, max_new_tokens=4, return_dict_in_generate=True, **kwargs)
    more = torch.cat([first.sequences, torch.randint(3, VOCAB, (1, 3))], dim=1)
    resumed = model.generate(more, **{CACHE_NAME: returned_cache(first)}, max_new_tokens=5, **kwargs)
    assert torch.equal(resumed, model.generate(more, max_new_tokens=5, **kwargs))


def test_cache_refuses_cropping_and_foreign_caches(make_model):
    from transformers import DynamicCache

    model = make_model("gdn", "AbbCD")
    with pytest.raises(TypeError, match="LinearCanonCache"):
        model(torch.tensor([[3, 4]]), cache=DynamicCache())
    with pytest.raises(NotImplementedError, match="cannot be cropped"):
        LinearCanonCache().crop(1)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.tensor([[3, 4]]), attention_mask=torch.ones(1, 5))


def test_packed_sequences_are_refused_not_ignored(make_model):
    model = make_model("gla", "AbbCD")
    ids = torch.randint(3, VOCAB, (1, 6))
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(ids, cu_seqlens=torch.tensor([0, 3, 6]))


@pytest.mark.parametrize("arch", ARCHS)
def test_config_switches_and_tuples_follow_transformers(make_model, arch):
    model = make_model(arch, "AbbCD")
    ids = torch.randint(3, VOCAB, (2, 6))
    with torch.no_grad():
        expected = model(ids, labels=ids)
        model.config.output_hidden_states = True
        assert len(model(ids).hidden_states) == model.config.num_hidden_layers + 1
        as_tuple = model(ids, labels=ids, return_dict=False)
        assert isinstance(as_tuple, tuple)
        loss, logits = as_tuple[:2]
        loaded = type(model).from_pretrained(None, config=model.config, state_dict=model.state_dict()).eval()
        torch.testing.assert_close(loaded(ids).logits, expected.logits)
    torch.testing.assert_close(loss, expected.loss)
    torch.testing.assert_close(logits, expected.logits)


def test_reference_argument_names_are_accepted(make_model):
    """Mamba2's `cache_params` and GLA's `num_logits_to_keep` (older transformers names) alias the standard ones."""
    model = make_model("mamba2", "AbbCD")
    ids = torch.randint(3, VOCAB, (1, 6))
    with torch.no_grad():
        full = model(ids).logits
        cache = LinearCanonCache()
        out = model(ids[:, :5], cache_params=cache, num_logits_to_keep=1)
        assert returned_cache(out) is cache and out.logits.shape[1] == 1
        torch.testing.assert_close(out.logits[:, 0], full[:, 4])
        torch.testing.assert_close(model(ids[:, 5:], cache_params=cache).logits[:, 0], full[:, 5])


def test_labels_give_the_shifted_cross_entropy(make_model):
    model = make_model("mamba2", "AbbCD")
    ids = torch.randint(3, VOCAB, (2, 10))
    out = model(ids, labels=ids)
    assert out.logits.dtype == torch.float32
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


# ---- initialisation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_canon_layers_keep_pytorch_default_init(make_config, arch):
    from .conftest import MODEL_CLASSES

    torch.manual_seed(0)
    sizes = dict(num_heads=16, head_dim=8) if arch == "mamba2" else dict(num_heads=2, head_dim=32)
    model = MODEL_CLASSES[arch](make_config(arch, "ABCD", hidden_size=64, intermediate_size=128, **sizes))
    for name, param in model.named_parameters():
        if ".canon" in name:
            assert param.abs().max() <= 0.5 and abs(param.std().item() - 0.5 / math.sqrt(3)) < 0.03, name


@pytest.mark.parametrize("arch", ["gla", "gdn"])
@pytest.mark.parametrize("split_init", [True, False])
def test_zeyuan_split_init_is_honoured(make_config, arch, split_init):
    """With zeyuan_split_init each half of a rank-r pair has std sqrt(0.02) / r^(1/4); without, plain 0.02 (the
    flag decides the scaling)."""
    from .conftest import MODEL_CLASSES

    torch.manual_seed(0)
    config = make_config(arch, "AbbCD", hidden_size=256, num_heads=4, head_dim=64, output_gate_rank=16,
                         initializer_range=0.02, zeyuan_split_init=split_init)  # fmt: skip
    model = MODEL_CLASSES[arch](config)
    expected = math.sqrt(0.02) / 16**0.25 if split_init else 0.02
    for name, param in model.named_parameters():
        if "g_proj" in name and name.endswith("weight"):
            assert abs(param.std().item() / expected - 1) < 0.1, name
        if name.endswith("q_proj.weight") or name.endswith("conv1d.weight"):
            assert abs(param.std().item() / 0.02 - 1) < 0.1, name


def test_decay_parameters_start_in_their_ranges(make_config):
    from .conftest import MODEL_CLASSES

    torch.manual_seed(0)
    gdn = MODEL_CLASSES["gdn"](make_config("gdn", "AbbCD", num_heads=64, head_dim=8, hidden_size=512))
    mamba = MODEL_CLASSES["mamba2"](make_config("mamba2", "AbbCD", num_heads=64, head_dim=2, hidden_size=64))
    for A_log, low in ((gdn.model.layers[0].attn.A_log, 0.0), (mamba.backbone.layers[0].mixer.A_log, 1.0)):
        A = A_log.exp()
        assert A.min() >= low and A.max() <= 16 and A.max() > 12
    for dt_bias in (gdn.model.layers[0].attn.dt_bias, mamba.backbone.layers[0].mixer.dt_bias):
        dt = torch.nn.functional.softplus(dt_bias)
        assert dt.min() >= 1e-3 - 1e-6 and dt.max() <= 0.1 + 1e-6
    assert torch.equal(mamba.backbone.layers[0].mixer.D, torch.ones(64))


# ---- training ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_a_few_adamw_steps_learn_a_repeating_sequence(make_model, arch):
    """Training mode runs the chunked recurrences and the recomputing Canon fusions (no cache) under autograd."""
    model = make_model(arch, "AbbCD").train()
    ids = torch.arange(3, 11).repeat(4)[None].repeat(2, 1)  # period 8
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(ids, labels=ids).loss
        assert returned_cache(model(ids[:, :2])) is None  # training forwards keep no cache
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
