import pytest

from huggingface import LlamaCanonConfig

SPEC_DEFAULTS = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    hidden_act="silu",
    max_position_embeddings=2048,
    initializer_range=0.02,
    rms_norm_eps=1e-6,
    use_cache=True,
    pad_token_id=None,
    bos_token_id=1,
    eos_token_id=2,
    pretraining_tp=1,
    tie_word_embeddings=False,
    rope_theta=10000.0,
    attention_bias=False,
    attention_dropout=0.0,
    mlp_bias=False,
    head_dim=128,
    rope_version="huggingface",
    canon_set="",
    canon_bias=False,
    canon_activation=False,
    canon_kernel=4,
    canon_residual=True,
    qk_norm=False,
    rope_dim=None,
)


def test_defaults_match_spec():
    config = LlamaCanonConfig()
    assert config.model_type == "LlamaCanon"
    for field, value in SPEC_DEFAULTS.items():
        assert getattr(config, field) == value, field
    assert config.partial_rotary_factor == 1.0


def test_partial_rotary_factor_is_derived_from_rope_dim():
    config = LlamaCanonConfig(hidden_size=2048, num_attention_heads=32, rope_dim=16)
    assert config.head_dim == 64 and config.partial_rotary_factor == 0.25


def test_round_trip_through_dict_keeps_every_field(tmp_path):
    config = LlamaCanonConfig(
        canon_set="ABCD", canon_kernel=3, qk_norm=True, rope_dim=8, head_dim=32, rope_version="lingua"
    )
    config.save_pretrained(tmp_path)
    loaded = LlamaCanonConfig.from_pretrained(tmp_path)
    for field in SPEC_DEFAULTS:
        assert getattr(loaded, field) == getattr(config, field), field
    assert loaded.auto_map["AutoModelForCausalLM"] == "modeling_llama_canon.LlamaCanonForCausalLM"


def test_saved_partial_rotary_factor_is_accepted_when_consistent():
    config = LlamaCanonConfig(hidden_size=256, num_attention_heads=4, partial_rotary_factor=0.25)
    assert config.rope_dim == 16
    with pytest.raises(ValueError, match="partial_rotary_factor=0.5 disagrees"):
        LlamaCanonConfig(hidden_size=256, num_attention_heads=4, rope_dim=16, partial_rotary_factor=0.5)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(canon_set="ABX"), "canon_set='ABX' contains 'X'"),
        (dict(canon_set="abcd"), "contains 'abcd'"),
        (dict(canon_kernel=0), "canon_kernel=0"),
        (dict(rope_dim=7, hidden_size=256, num_attention_heads=4), "rope_dim=7"),
        (dict(rope_dim=128, hidden_size=256, num_attention_heads=4), "rope_dim=128"),
        (dict(rope_version="neox"), "rope_version='neox'"),
        (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling=.* is not supported"),
        (dict(num_attention_heads=32, num_key_value_heads=5), "num_key_value_heads=5"),
    ],
)
def test_bad_values_raise_one_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        LlamaCanonConfig(**fields)
