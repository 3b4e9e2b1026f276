"""Behaviours that transformers' own model tests expect of every causal LM, held for LlamaCanon."""

import pytest
import torch

from huggingface import LlamaCanonForCausalLM, LlamaCanonModel


# transformers refuses config.output_attentions under sdpa (the keyword switches that call to eager)
@pytest.mark.parametrize("implementation, from_config", [("eager", False), ("sdpa", False), ("eager", True)])
def test_attention_weights_are_returned_when_asked(make_model, implementation, from_config):
    model = make_model(canon_set="ABCD", rope_dim=4, attn_implementation=implementation)
    ids = torch.randint(3, 61, (2, 7))
    with torch.no_grad():
        plain = model(ids).logits
        if from_config:
            model.config.output_attentions = True
            out = model(ids)
        else:
            out = model(ids, output_attentions=True)
    c = model.config
    assert len(out.attentions) == c.num_hidden_layers
    for weights in out.attentions:
        assert weights.shape == (2, c.num_attention_heads, 7, 7)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, c.num_attention_heads, 7))
        assert torch.all(weights.triu(diagonal=1) == 0)  # causal
    torch.testing.assert_close(out.logits, plain, rtol=1e-5, atol=1e-5)


def test_hidden_states_follow_the_config(make_model):
    model = make_model(canon_set="AC")
    model.config.output_hidden_states = True
    with torch.no_grad():
        out = model(torch.randint(3, 61, (1, 5)))
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert out.attentions is None


@pytest.mark.parametrize("from_config", [False, True])
def test_return_dict_false_gives_tuples(make_model, from_config):
    model = make_model(canon_set="ABCD")
    ids = torch.randint(3, 61, (2, 6))
    with torch.no_grad():
        expected = model(ids, labels=ids)
        base_expected = model.model(ids).last_hidden_state
        if from_config:
            model.config.return_dict = False
            lm_out, base_out = model(ids, labels=ids), model.model(ids)
        else:
            lm_out, base_out = model(ids, labels=ids, return_dict=False), model.model(ids, return_dict=False)
    assert isinstance(lm_out, tuple) and isinstance(base_out, tuple)
    torch.testing.assert_close(lm_out[0], expected.loss)
    torch.testing.assert_close(lm_out[1], expected.logits)
    torch.testing.assert_close(base_out[0], base_expected)


def test_from_pretrained_with_a_config_and_a_state_dict_and_no_path(make_model):
    model = make_model(canon_set="ABCD", qk_norm=True)
    loaded = LlamaCanonForCausalLM.from_pretrained(None, config=model.config, state_dict=model.state_dict()).eval()
    ids = torch.randint(3, 61, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    base = LlamaCanonModel.from_pretrained(None, config=model.config, state_dict=model.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(ids).last_hidden_state, model.model(ids).last_hidden_state)


def test_assisted_decoding_is_refused_for_canon_models_and_works_without_them(make_model):
    prompt = torch.randint(3, 61, (1, 5))
    settings = dict(max_new_tokens=5, do_sample=False, eos_token_id=None)
    canon = make_model(canon_set="AC")
    with pytest.raises(ValueError, match="(?i)assisted"):
        canon.generate(prompt, assistant_model=make_model(canon_set="AC", seed=1), **settings)
    plain = make_model(canon_set="")
    assisted = plain.generate(prompt, assistant_model=make_model(canon_set="", seed=1), **settings)
    assert torch.equal(assisted, plain.generate(prompt, **settings))


def test_num_logits_to_keep_is_the_older_name_of_logits_to_keep(make_model):
    model = make_model(canon_set="AC")
    ids = torch.randint(3, 61, (2, 6))
    with torch.no_grad():
        full = model(ids).logits
        for keyword in ("logits_to_keep", "num_logits_to_keep"):
            last = model(ids, **{keyword: 1}).logits
            assert last.shape[1] == 1
            torch.testing.assert_close(last[:, 0], full[:, -1])
