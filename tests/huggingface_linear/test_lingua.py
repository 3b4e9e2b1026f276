"""The state-dict bridge from Lingua checkpoints: names are "trans." + the HF names."""

import json

import pytest
import torch

from .conftest import ARCHS, MODEL_CLASSES, VOCAB

LINGUA_MODEL_ARGS = {
    "gla": dict(model_name="GLA5", dim=32, n_layers=2, n_heads=2, vocab_size=VOCAB, canon_set="AbbCD", hidden_dim=48),
    "gdn": dict(model_name="GDN2", dim=32, n_layers=2, n_heads=2, vocab_size=VOCAB, canon_set="AbbCD", hidden_dim=48),
    "mamba2": dict(model_name="Mamba2", dim=32, n_layers=2, n_heads=4, vocab_size=VOCAB, canon_set="AbbCD",
                   mamba_ssm=64, mlp_type="mlp10"),
}  # fmt: skip


def lingua_pair(arch, seed):
    """A trained-looking Lingua state dict ("trans." names) and the HF model that wrote it."""
    cls = MODEL_CLASSES[arch]
    torch.manual_seed(seed)
    source = cls(cls.build_config_from_yaml(LINGUA_MODEL_ARGS[arch])).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return {f"trans.{k}": v.clone() for k, v in source.state_dict().items()}, source


@pytest.mark.parametrize("arch", ARCHS)
def test_load_from_lingua_state_reproduces_the_model(arch):
    state, source = lingua_pair(arch, seed=1)
    cls = MODEL_CLASSES[arch]
    torch.manual_seed(2)
    target = cls(cls.build_config_from_yaml(LINGUA_MODEL_ARGS[arch])).eval()
    target.load_from_lingua_state(state)
    ids = torch.randint(3, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(target(ids).logits, source(ids).logits, rtol=0, atol=0)
    prefix = "trans.backbone." if arch == "mamba2" else "trans.model."
    assert any(k.startswith(prefix + "layers.0.") for k in state)


def test_lingua_state_mismatch_is_one_error_naming_the_keys():
    state, source = lingua_pair("gla", seed=1)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    del state["trans.model.layers.1.canonC.weight"]
    state["trans.model.layers.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"missing \['model.layers.1.canonC.weight'\], unexpected \['model.layers.0."):
        source.load_from_lingua_state(state)
    for k, v in source.state_dict().items():  # nothing loaded
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("arch", ["gdn", "mamba2"])
def test_from_pretrained_reads_a_lingua_folder(tmp_path, arch):
    state, source = lingua_pair(arch, seed=3)
    folder = tmp_path / "run" / "default"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"model": LINGUA_MODEL_ARGS[arch], "data": {}}))
    torch.save({"model": state}, folder / "consolidated.pth")
    loaded = MODEL_CLASSES[arch].from_pretrained(tmp_path / "run")
    ids = torch.randint(3, VOCAB, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, source(ids).logits, rtol=0, atol=0)
    assert not loaded.training


def test_tied_embeddings_load_with_or_without_the_lm_head_entry():
    cls = MODEL_CLASSES["gla"]
    args = {**LINGUA_MODEL_ARGS["gla"], "weight_tying": True}
    torch.manual_seed(4)
    source = cls(cls.build_config_from_yaml(args)).eval()
    assert source.lm_head.weight is source.model.embeddings.weight
    state = {f"trans.{k}": v.clone() for k, v in source.state_dict().items()}
    ids = torch.randint(3, VOCAB, (1, 6))
    for lingua_state in (state, {k: v for k, v in state.items() if k != "trans.lm_head.weight"}):
        torch.manual_seed(5)
        target = cls(cls.build_config_from_yaml(args)).eval().load_from_lingua_state(lingua_state)
        with torch.no_grad():
            torch.testing.assert_close(target(ids).logits, source(ids).logits, rtol=0, atol=0)
