"""Configs: every field and its default; the published HF/lingua json files of the recipes (rebuilt here from their
field lists) load unchanged, build the recipe models with the published parameter counts, and agree."""

import math

import pytest
import torch

from huggingface_linear import (
    GatedDeltaNetCanonConfig,
    GatedDeltaNetCanonForCausalLM,
    GLACanonConfig,
    GLACanonForCausalLM,
    Mamba2CanonConfig,
    Mamba2CanonForCausalLM,
)

CANON_DEFAULTS = dict(canon_set="", canon_bias=False, canon_activation=False, canon_kernel=4, canon_residual=True)
SPEC_DEFAULTS = {
    GLACanonConfig: dict(
        hidden_size=2048, expand_k=0.5, expand_v=1.0, hidden_ratio=4, intermediate_size=None, num_hidden_layers=24,
        num_heads=4, num_kv_heads=None, feature_map=None, attn_mode="chunk", use_short_conv=False, conv_size=4,
        use_output_gate=True, output_gate_rank=None, clamp_min=None, hidden_act="swish", max_position_embeddings=2048,
        elementwise_affine=True, norm_eps=1e-6, use_gk=True, use_gv=False, attn=None, use_cache=True,
        pad_token_id=None, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, initializer_range=0.02,
        zeyuan_split_init=False, zeyuan_layernorm=False, fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=True,
        use_l2warp=False, vocab_size=32000, **CANON_DEFAULTS,
    ),
    GatedDeltaNetCanonConfig: dict(
        attn_mode="chunk", hidden_size=2048, expand_v=2, use_gate=True, output_gate_rank=None, use_short_conv=True,
        conv_size=4, head_dim=256, num_heads=6, max_position_embeddings=2048, hidden_ratio=4, intermediate_size=None,
        hidden_act="swish", num_hidden_layers=21, norm_eps=1e-6, attn=None, use_cache=True, pad_token_id=None,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, initializer_range=0.02, zeyuan_split_init=False,
        zeyuan_layernorm=False, fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=True, vocab_size=32000,
        **CANON_DEFAULTS,
    ),
    Mamba2CanonConfig: dict(
        num_heads=128, head_dim=64, vocab_size=32768, hidden_size=4096, state_size=128, num_hidden_layers=64,
        layer_norm_epsilon=1e-5, pad_token_id=None, bos_token_id=0, eos_token_id=2, expand=2, conv_kernel=4,
        n_groups=8, use_bias=False, use_conv_bias=True, hidden_act="silu", initializer_range=0.1,
        residual_in_fp32=True, time_step_rank=256, time_step_min=0.001, time_step_max=0.1, time_step_floor=1e-4,
        time_step_limit=(0.0, math.inf), rescale_prenorm_residual=False, use_cache=True, rms_norm=True,
        chunk_size=256, tie_word_embeddings=False, intermediate_size=None, noconv1d=False, **CANON_DEFAULTS,
    ),
}  # fmt: skip
MODEL_TYPES = {
    GLACanonConfig: "GLACanon",
    GatedDeltaNetCanonConfig: "GatedDeltaNetCanon",
    Mamba2CanonConfig: "Mamba2Canon",
}


@pytest.mark.parametrize("config_class", list(SPEC_DEFAULTS), ids=lambda c: c.__name__)
def test_defaults_and_model_type_match_the_spec(config_class):
    config = config_class()
    assert config.model_type == MODEL_TYPES[config_class]
    for name, value in SPEC_DEFAULTS[config_class].items():
        assert getattr(config, name) == value, name


# ---- the 48 recipes' model json files, rebuilt from their published field lists -----------------------------------

SIZES = {  # d, L, H, vocab, 8B MLP width, bos (tokenizer), seq
    "1B": (2048, 24, 16, 32000, None),
    "3B": (3072, 26, 24, 32000, None),
    "8B": (4096, 32, 32, 128256, 9472),
}
# transformers 4.47 wrote these generic keys into every config.json
LEGACY_KEYS = dict(
    return_dict=True, output_hidden_states=False, output_attentions=False, torchscript=False, torch_dtype=None,
    use_bfloat16=False, tf_legacy_loss=False, pruned_heads={}, chunk_size_feed_forward=0, is_encoder_decoder=False,
    is_decoder=False, cross_attention_hidden_size=None, add_cross_attention=False, tie_encoder_decoder=False,
    max_length=20, min_length=0, do_sample=False, early_stopping=False, num_beams=1, num_beam_groups=1,
    diversity_penalty=0.0, temperature=1.0, top_k=50, top_p=1.0, typical_p=1.0, repetition_penalty=1.0,
    length_penalty=1.0, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0, bad_words_ids=None,
    num_return_sequences=1, output_scores=False, return_dict_in_generate=False, forced_bos_token_id=None,
    forced_eos_token_id=None, remove_invalid_values=False, exponential_decay_length_penalty=None,
    suppress_tokens=None, begin_suppress_tokens=None, architectures=None, finetuning_task=None,
    id2label={"0": "LABEL_0", "1": "LABEL_1"}, label2id={"LABEL_0": 0, "LABEL_1": 1}, tokenizer_class=None,
    prefix=None, sep_token_id=None, decoder_start_token_id=None, task_specific_params=None, problem_type=None,
    _name_or_path="", _attn_implementation_autoset=False, transformers_version="4.47.1",
)  # fmt: skip
CANON_FIELDS = dict(canon_bias=False, canon_activation=False, canon_kernel=4, canon_residual=True)


def hf_json(family, variant, size, zeyuan_layernorm=None):
    """The `*_model_HF.json` dict of one recipe (the published field lists)."""
    d, L, H, V, width = SIZES[size]
    canon_set = "AbbCD" if variant == "Canon" else "bb"
    zl = size == "8B" if zeyuan_layernorm is None else zeyuan_layernorm
    if family == "GLA5":
        fields = dict(
            hidden_size=d, expand_k=1, expand_v=2, hidden_ratio=4, intermediate_size=width or 2 * d,
            num_hidden_layers=L, num_heads=H, num_kv_heads=None, feature_map=None, attn_mode="chunk",
            use_short_conv=True, conv_size=4, use_output_gate=True, clamp_min=None, hidden_act="swish",
            max_position_embeddings=2048, elementwise_affine=True, norm_eps=1e-5, use_gk=True, use_gv=False,
            attn=None, use_cache=True, initializer_range=0.02, fuse_norm=True, fuse_swiglu=True,
            fuse_cross_entropy=False, use_l2warp=False, vocab_size=V, canon_set=canon_set, **CANON_FIELDS,
            zeyuan_split_init=True, output_gate_rank=16, zeyuan_layernorm=zl, tie_word_embeddings=False,
            bos_token_id=1, pad_token_id=None, eos_token_id=2, model_type="GLACanon",
        )  # fmt: skip
    elif family == "GDN2":
        fields = dict(
            attn_mode="chunk", hidden_size=d, expand_v=2, use_gate=True, use_short_conv=True, conv_size=4,
            head_dim=128, num_heads=H, max_position_embeddings=2048, hidden_ratio=4, intermediate_size=width or 2 * d,
            hidden_act="swish", num_hidden_layers=L, norm_eps=1e-5, attn=None, use_cache=True, initializer_range=0.02,
            fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=False, vocab_size=V, canon_set=canon_set,
            **CANON_FIELDS, zeyuan_split_init=True, output_gate_rank=16, zeyuan_layernorm=zl,
            tie_word_embeddings=False, bos_token_id=1, pad_token_id=None, eos_token_id=2,
            model_type="GatedDeltaNetCanon",
        )  # fmt: skip
    else:
        fields = dict(
            vocab_size=V, hidden_size=d, state_size=128, num_hidden_layers=L, layer_norm_epsilon=1e-5, conv_kernel=4,
            expand=2, bos_token_id=0, eos_token_id=2, pad_token_id=None, use_bias=False, use_conv_bias=True,
            hidden_act="silu", initializer_range=0.1, time_step_rank=-10344, time_step_min=0.001, time_step_max=0.1,
            time_step_floor=1e-4, rescale_prenorm_residual=False, residual_in_fp32=False, use_cache=True, n_groups=1,
            num_heads=H, head_dim=256, rms_norm=True, chunk_size=256, time_step_limit=[0.0, math.inf],
            tie_word_embeddings=False, canon_set=canon_set, **CANON_FIELDS, noconv1d=False, intermediate_size=width,
            norm_eps=1e-5, fuse_cross_entropy=False, mlp_type="mlp10", model_type="Mamba2Canon",
        )  # fmt: skip
    return {**LEGACY_KEYS, **fields}


def lingua_json(family, variant, size, zeyuan_layernorm=None):
    """The `model` section of a recipe (`*_model_lingua.json`): LMTransformerArgs fields."""
    d, L, H, V, width = SIZES[size]
    fields = dict(
        dim=d, n_layers=L, head_dim=None, n_heads=H, n_kv_heads=None, ffn_dim_multiplier=None, multiple_of=256,
        norm_eps=1e-5, rope_theta=10000.0, init_base_std=None, init_std_factor="disabled", max_seqlen=4096,
        seed=42, vocab_size=V, weight_tying=False, sliding_window=None,
        canon_set="AbbCD" if variant == "Canon" else "bb", **CANON_FIELDS, model_name=family, hidden_dim=width,
        attn_impl="sdpa", z_loss=False, qk_norm=False,
    )  # fmt: skip
    if family == "Mamba2":
        fields.update(mamba_ssm=128, mlp_type="mlp10")
    else:
        fields["zeyuan_layernorm"] = size == "8B" if zeyuan_layernorm is None else zeyuan_layernorm
    return fields


# published total parameters (embedding and lm_head included)
PARAM_COUNTS = {
    ("GLA5", "Canon"): (1_345_183_744, 3_151_003_136, 8_013_164_544),
    ("GLA5", "conv"): (1_344_004_096, 3_149_086_208, 8_009_691_136),
    ("GDN2", "Canon"): (1_345_135_360, 3_152_202_464, 8_017_229_824),
    ("GDN2", "conv"): (1_343_955_712, 3_150_285_536, 8_013_756_416),
    ("Mamba2", "Canon"): (1_354_302_592, 3_166_446_928, 8_039_545_856),
    ("Mamba2", "conv"): (1_353_122_944, 3_164_530_000, 8_036_072_448),
}
FAMILIES = {
    "GLA5": (GLACanonConfig, GLACanonForCausalLM),
    "GDN2": (GatedDeltaNetCanonConfig, GatedDeltaNetCanonForCausalLM),
    "Mamba2": (Mamba2CanonConfig, Mamba2CanonForCausalLM),
}
RECIPES = [(f, v, s) for f, v in PARAM_COUNTS for s in SIZES]


def model_fields(config):
    """A config's own fields (the generic PretrainedConfig keys left out)."""
    generic = set(LEGACY_KEYS) | {"transformers_version", "auto_map", "dtype", "output_attentions"}
    return {k: v for k, v in config.to_dict().items() if k not in generic}


@pytest.mark.parametrize("family, variant, size", RECIPES, ids=lambda x: str(x))
def test_recipe_json_loads_unchanged_and_builds_the_spec_parameter_count(family, variant, size):
    config_class, model_class = FAMILIES[family]
    published = hf_json(family, variant, size)
    config = config_class(**published)
    saved = config.to_dict()
    for key, value in published.items():
        if key not in LEGACY_KEYS:  # generation defaults moved to GenerationConfig in transformers 5
            assert saved[key] == (list(value) if isinstance(value, tuple) else value), key
    with torch.device("meta"):
        model = model_class(config)
    expected = PARAM_COUNTS[(family, variant)][list(SIZES).index(size)]
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("family, variant, size", RECIPES, ids=lambda x: str(x))
def test_lingua_json_builds_the_same_config_as_the_hf_json(family, variant, size):
    config_class, model_class = FAMILIES[family]
    built = model_class.build_config_from_yaml(lingua_json(family, variant, size))
    published = config_class(**hf_json(family, variant, size))
    expected = model_fields(published)
    got = model_fields(built)
    if family == "Mamba2":  # the yaml's tuple vs the json's list
        got["time_step_limit"] = list(got["time_step_limit"])
    assert got == expected


def test_mamba2_builder_refuses_state_sizes_it_cannot_build():
    section = lingua_json("Mamba2", "Canon", "1B")
    assert Mamba2CanonForCausalLM.build_config_from_yaml({**section, "mamba_ssm": None}).state_size == 256
    with pytest.raises(ValueError, match="mamba_ssm=16"):
        Mamba2CanonForCausalLM.build_config_from_yaml({**section, "mamba_ssm": 16})


def test_builders_refuse_other_model_names():
    with pytest.raises(ValueError, match="model_name='GDN2'"):
        GLACanonForCausalLM.build_config_from_yaml(lingua_json("GDN2", "Canon", "1B"))
    with pytest.raises(ValueError, match="exactly 'Mamba2'"):
        Mamba2CanonForCausalLM.build_config_from_yaml({**lingua_json("Mamba2", "Canon", "1B"), "model_name": "Mamba2X"})
    with pytest.raises(ValueError, match="vocab_size=-1"):
        GLACanonForCausalLM.build_config_from_yaml({**lingua_json("GLA5", "Canon", "1B"), "vocab_size": -1})


def test_mamba2_builder_drops_the_conv_without_b():
    config = Mamba2CanonForCausalLM.build_config_from_yaml({**lingua_json("Mamba2", "Canon", "1B"), "canon_set": "ACD"})
    assert config.noconv1d and not config.use_conv_bias
    assert config.layer_norm_epsilon == 1e-5 and config.state_size == 128 and config.head_dim == 256


@pytest.mark.parametrize("config_class", list(SPEC_DEFAULTS), ids=lambda c: c.__name__)
def test_bad_canon_set_is_one_clear_error(config_class):
    with pytest.raises(ValueError, match=r"canon_set='AXC' contains 'X'"):
        config_class(canon_set="AXC")
    with pytest.raises(ValueError, match="canon_kernel=0"):
        config_class(canon_kernel=0)


def test_unsupported_options_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="hybrid attention"):
        GLACanonConfig(attn={"layers": [1], "num_heads": 4})
    with pytest.raises(ValueError, match="num_kv_heads=2"):
        GLACanonConfig(num_kv_heads=2)
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        GatedDeltaNetCanonConfig(hidden_act="gelu")
    with pytest.raises(ValueError, match="num_heads \\* head_dim"):
        Mamba2CanonConfig(num_heads=3, head_dim=64, hidden_size=64)
    with pytest.raises(ValueError, match="mlp_type='mlp7'"):
        Mamba2CanonConfig(mlp_type="mlp7")
    with pytest.raises(ValueError, match="use_conv_bias=False"):
        Mamba2CanonConfig(noconv1d=True)


@pytest.mark.parametrize("config_class", list(SPEC_DEFAULTS), ids=lambda c: c.__name__)
def test_save_and_reload_round_trip(tmp_path, config_class):
    sizes = dict(hidden_size=64, num_heads=8, head_dim=16, n_groups=2, mlp_type="mlp10")
    config = config_class(canon_set="AbbCD", **(sizes if config_class is Mamba2CanonConfig else dict(num_heads=4)))
    config.save_pretrained(tmp_path)
    again = config_class.from_pretrained(tmp_path)
    assert model_fields(again) == model_fields(config)
