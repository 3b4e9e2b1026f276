import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from huggingface import LlamaCanonForCausalLM
from huggingface.modeling_llama_canon import config_from_lingua_params

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# HF name -> Lingua name, written out by hand (independent of the code under test)
HF_TO_LINGUA_LAYER = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "self_attn.q_norm": "attention.q_norm",
    "self_attn.k_norm": "attention.k_norm",
    "self_attn.canonB": "attention.canonB",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.canonD": "feed_forward.canonD",
    "canonA": "canonA",
    "canonC": "canonC",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}


def to_lingua_names(hf_state):
    out = {}
    for key, tensor in hf_state.items():
        if key == "model.embed_tokens.weight":
            out["tok_embeddings.weight"] = tensor
        elif key == "model.norm.weight":
            out["norm.weight"] = tensor
        elif key == "lm_head.weight":
            out["output.weight"] = tensor
        else:
            _, _, i, *module, leaf = key.split(".")
            out[f"layers.{i}.{HF_TO_LINGUA_LAYER['.'.join(module)]}.{leaf}"] = tensor
    return out


def lingua_reference_logits(sd, p, ids):
    """A from-scratch Lingua-style forward: complex-number RoPE on interleaved pairs, Canon by torch's Conv1d."""
    dim, H, KV, L = p["dim"], p["n_heads"], p["n_kv_heads"], p["n_layers"]
    hd = dim // H
    R = p["rope_dim"] or hd
    T = ids.shape[1]

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + p["norm_eps"]))

    def canon(x, w):
        K = w.shape[-1]
        return x + F.conv1d(F.pad(x.transpose(1, 2), (K - 1, 0)), w, groups=x.shape[-1]).transpose(1, 2)

    freqs = 1.0 / (p["rope_theta"] ** (torch.arange(0, R, 2)[: R // 2].float() / R))
    angles = torch.outer(torch.arange(T).float(), freqs)
    cis = torch.polar(torch.ones_like(angles), angles)

    def rope(x):  # x [B, T, heads, hd]
        rot = torch.view_as_complex(x[..., :R].float().reshape(*x.shape[:-1], R // 2, 2))
        rot = torch.view_as_real(rot * cis[None, :, None, :]).flatten(-2)
        return torch.cat([rot.to(x.dtype), x[..., R:]], dim=-1)

    h = sd["tok_embeddings.weight"][ids]
    for i in range(L):
        prefix = f"layers.{i}."
        g = lambda name, prefix=prefix: sd[f"{prefix}{name}.weight"]  # noqa: E731
        x = canon(rms(h, g("attention_norm")), g("canonA"))
        q, k, v = x @ g("attention.wq").T, x @ g("attention.wk").T, x @ g("attention.wv").T
        q, k = rms(q, g("attention.q_norm")), rms(k, g("attention.k_norm"))
        q, k, v = canon(torch.cat([q, k, v], -1), g("attention.canonB")).split([H * hd, KV * hd, KV * hd], -1)
        q, k, v = rope(q.unflatten(-1, (H, hd))), rope(k.unflatten(-1, (KV, hd))), v.unflatten(-1, (KV, hd))
        k, v = k.repeat_interleave(H // KV, dim=2), v.repeat_interleave(H // KV, dim=2)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        h = h + att.transpose(1, 2).flatten(-2) @ g("attention.wo").T
        x = canon(rms(h, g("ffn_norm")), g("canonC"))
        gate, up = canon(
            torch.cat([x @ g("feed_forward.w1").T, x @ g("feed_forward.w3").T], -1), g("feed_forward.canonD")
        ).chunk(2, -1)
        h = h + (F.silu(gate) * up) @ g("feed_forward.w2").T
    return rms(h, sd["norm.weight"]) @ sd["output.weight"].T


PARAMS = {
    "model": {
        "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 48, "vocab_size": 61,
        "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_dim": 4, "qk_norm": True, "canon_set": "ABCD",
        "canon_kernel": 4, "canon_residual": True, "canon_activation": False, "canon_bias": False,
        "weight_tying": False, "multiple_of": 256, "ffn_dim_multiplier": None,
    },
    "data": {"seq_len": 128, "tokenizer": {"name": "sp"}},
}  # fmt: skip


@pytest.fixture
def lingua_checkpoint(tmp_path, make_model):
    """A Lingua folder (default/params.json + consolidated.pth) and its state dict, from a directly built model."""
    model = make_model(canon_set="ABCD", qk_norm=True, rope_dim=4, rope_version="lingua")
    state = to_lingua_names(model.state_dict())
    folder = tmp_path / "lingua" / "default"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(PARAMS))
    torch.save({"model": state, "optim": {}}, folder / "consolidated.pth")
    return tmp_path / "lingua", state, model


def test_lingua_layout_matches_an_independent_lingua_forward(lingua_checkpoint):
    _, state, model = lingua_checkpoint
    ids = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, lingua_reference_logits(state, PARAMS["model"], ids))


@pytest.mark.parametrize("rope_version", ["lingua", "huggingface"])
def test_lingua_folder_loads_with_the_same_logits(lingua_checkpoint, rope_version):
    folder, state, model = lingua_checkpoint
    loaded = LlamaCanonForCausalLM.from_pretrained(folder, rope_version=rope_version)
    assert loaded.config.rope_version == rope_version and loaded.config.canon_set == "ABCD"
    assert (loaded.config.bos_token_id, loaded.config.eos_token_id) == (1, 2)
    ids = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    consolidated_dir = LlamaCanonForCausalLM.from_pretrained(folder / "default")
    assert torch.equal(consolidated_dir.lm_head.weight, model.lm_head.weight)


def test_convert_cli_writes_a_standard_checkpoint_with_the_same_logits(lingua_checkpoint, tmp_path):
    folder, _, model = lingua_checkpoint
    dst = tmp_path / "converted"
    run = subprocess.run(
        [sys.executable, "-m", "huggingface.convert_lingua_to_hf", str(folder), str(dst)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "rope_version=huggingface" in run.stdout
    converted = AutoModelForCausalLM.from_pretrained(dst, trust_remote_code=True)
    assert converted.config.rope_version == "huggingface"
    ids = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    again = subprocess.run(
        [sys.executable, "-m", "huggingface.convert_lingua_to_hf", str(folder), str(dst)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode != 0 and "already exists" in again.stderr


def test_strict_loading_lists_missing_and_unexpected_keys(lingua_checkpoint, make_model):
    _, state, _ = lingua_checkpoint
    model = make_model(canon_set="ABCD", qk_norm=True, rope_dim=4, rope_version="lingua")
    broken = dict(state)
    del broken["layers.1.canonC.weight"]
    broken["layers.0.attention.extra.weight"] = torch.zeros(1)
    before = model.state_dict()["model.embed_tokens.weight"].clone()
    with pytest.raises(KeyError, match=r"missing \['model.layers.1.canonC.weight'\].*layers.0.attention.extra"):
        model.load_from_lingua_state(broken)
    assert torch.equal(model.state_dict()["model.embed_tokens.weight"], before)
    missing, unexpected = model.load_from_lingua_state(broken, strict=False)
    assert missing == ["model.layers.1.canonC.weight"] and unexpected == ["layers.0.attention.extra.weight"]


def test_bad_folders_give_one_clear_error(tmp_path):
    (tmp_path / "only_weights" / "default").mkdir(parents=True)
    torch.save({"model": {}}, tmp_path / "only_weights" / "default" / "consolidated.pth")
    with pytest.raises(FileNotFoundError, match="has consolidated.pth but no params.json"):
        LlamaCanonForCausalLM.from_pretrained(tmp_path / "only_weights")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a Hugging Face folder"):
        LlamaCanonForCausalLM.from_pretrained(tmp_path / "empty")


def test_params_json_fields_are_all_derived():
    params = {
        "model": {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                  "rope_theta": 100000.0, "rope_dim": 32, "canon_set": "AC", "canon_kernel": 3,
                  "canon_activation": True, "canon_residual": False, "multiple_of": 256,
                  "ffn_dim_multiplier": 1.3, "weight_tying": True},
        "data": {"seq_len": 4096, "tokenizer": {"name": "tiktoken"}},
    }  # fmt: skip
    config = config_from_lingua_params(params)
    assert config.intermediate_size == 256 * math.ceil(int(1.3 * int(2 * 4 * 4096 / 3)) / 256) == 14336
    assert (config.bos_token_id, config.eos_token_id) == (128000, 128001)
    assert (config.num_key_value_heads, config.head_dim, config.rope_dim) == (8, 128, 32)
    assert (config.canon_kernel, config.canon_activation, config.canon_residual) == (3, True, False)
    assert config.tie_word_embeddings and config.rope_theta == 100000.0 and config.rope_version == "lingua"
    one_b = dict(params["model"], dim=2048, ffn_dim_multiplier=None, n_heads=32, n_kv_heads=None)
    assert config_from_lingua_params({"model": one_b}).intermediate_size == 5632


def test_tied_lingua_checkpoint_loads(tmp_path, make_model):
    model = make_model(canon_set="AC", tie_word_embeddings=True, rope_version="lingua")
    state = to_lingua_names({k: v for k, v in model.state_dict().items() if k != "lm_head.weight"})
    state["output.tied_module.weight"] = state["tok_embeddings.weight"]
    params = json.loads(json.dumps(PARAMS))
    params["model"].update(canon_set="AC", qk_norm=False, rope_dim=None, weight_tying=True)
    (tmp_path / "params.json").write_text(json.dumps(params))
    torch.save({"model": state}, tmp_path / "consolidated.pth")
    loaded = LlamaCanonForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 61, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_hub_repo_in_lingua_layout_is_downloaded_and_loaded(lingua_checkpoint, monkeypatch):
    """A hub id whose repo holds <variant>/params.json + consolidated.pth (the released layout) loads as Lingua."""
    import huggingface_hub

    folder, _, model = lingua_checkpoint
    requested = []

    def fake_download(repo_id, filename, token=None):
        requested.append((repo_id, filename))
        return str(folder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = LlamaCanonForCausalLM.from_pretrained("facebook/PhysicsLM4.2__LlamaCanon-tiny")
    assert requested == [
        ("facebook/PhysicsLM4.2__LlamaCanon-tiny", "default/params.json"),
        ("facebook/PhysicsLM4.2__LlamaCanon-tiny", "default/consolidated.pth"),
    ]
    ids = torch.randint(0, 61, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


@pytest.mark.parametrize(
    "tokenizer, expected",
    [
        ({"name": "tokens", "vocab_size": 53}, (52, 51)),  # the trainer's TokenIdTokenizer: BOS V-1, EOS V-2
        ({"name": "bytes"}, (256, 257)),
        ({"name": "mock"}, (None, None)),
    ],
)
def test_special_ids_follow_the_trainers_tokenizer(tokenizer, expected):
    from lingua.tokenizer import build_tokenizer

    params = {"model": {"dim": 64, "n_layers": 1, "n_heads": 4, "vocab_size": 260}, "data": {"tokenizer": tokenizer}}
    config = config_from_lingua_params(params)
    assert (config.bos_token_id, config.eos_token_id) == expected
    trainer_tokenizer = build_tokenizer(tokenizer["name"], None, tokenizer.get("vocab_size", 10000))
    assert (trainer_tokenizer.bos_id, trainer_tokenizer.eos_id) == expected
