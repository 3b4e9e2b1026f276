"""Contract 1 (the state-dict bridge): a Lingua checkpoint folder loads into the Hugging Face LlamaCanon model with
the same logits as the Lingua model."""

import json
from dataclasses import asdict

import pytest
import torch
from transformers import AutoModelForCausalLM

from apps.main.transformer import LMTransformer, LMTransformerArgs
from huggingface import LlamaCanonForCausalLM
from huggingface.convert_lingua_to_hf import convert_lingua_to_hf
from lingua.optim import OptimArgs

VOCAB = 61
SEQ_LEN = 32


def lingua_model(**overrides):
    fields = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=VOCAB, max_seqlen=SEQ_LEN, multiple_of=16)
    fields.update(overrides)
    args = LMTransformerArgs(**fields)
    torch.manual_seed(0)
    model = LMTransformer(args)
    model.init_weights()
    with torch.no_grad():  # norms start at 1: perturb them so that their mapping is checked too
        for name, param in model.named_parameters():
            if "norm" in name:
                param.mul_(1 + 0.2 * torch.randn_like(param))
    return model.eval(), args


def save_consolidated(model, args, step_dir):
    """The layout the trainer's consolidation writes: <step>/consolidated/{consolidated.pth, params.json}."""
    folder = step_dir / "consolidated"
    folder.mkdir(parents=True)
    params = {
        "name": "bridge",
        "dump_dir": str(step_dir.parent),
        "seed": 777,
        "steps": 10,
        "data": {"seq_len": SEQ_LEN, "batch_size": 2, "n_views": 2, "tokenizer": {"name": "sp", "path": None}},
        "optim": asdict(OptimArgs()),
        "model": asdict(args),
    }
    (folder / "params.json").write_text(json.dumps(params))
    torch.save({"model": model.state_dict(), "optim": {}}, folder / "consolidated.pth")
    return folder


SHAPES = {
    "llama": dict(canon_set="", qk_norm=False),
    "canon-qknorm-partial-rope": dict(canon_set="ABCD", qk_norm=True, rope_dim=4),
    "canon-AC-tied-mha": dict(canon_set="AC", n_kv_heads=None, rope_dim=2, weight_tying=True),
    "canon-BD-kernel3-act": dict(canon_set="BD", qk_norm=True, canon_kernel=3, canon_activation=True),
    "canon-no-residual-ffn-formula": dict(canon_set="ABCD", canon_residual=False, ffn_dim_multiplier=1.5),
}


@pytest.mark.parametrize("rope_version", ["lingua", "huggingface"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_consolidated_folder_loads_into_hf_with_the_same_logits(tmp_path, shape, rope_version):
    model, args = lingua_model(**SHAPES[shape])
    step_dir = tmp_path / "checkpoints" / "0000000010"
    folder = save_consolidated(model, args, step_dir)
    ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        expected = model(ids)
        for hf in (
            LlamaCanonForCausalLM.from_pretrained(folder, rope_version=rope_version),
            LlamaCanonForCausalLM.from_pretrained(step_dir, variant="consolidated", rope_version=rope_version),
        ):
            assert hf.config.rope_version == rope_version and hf.config.canon_set == args.canon_set
            torch.testing.assert_close(hf(ids).logits, expected, rtol=0, atol=1e-4)


def test_converted_folder_loads_with_auto_model_and_the_same_logits(tmp_path):
    model, args = lingua_model(canon_set="ABCD", qk_norm=True, rope_dim=4)
    folder = save_consolidated(model, args, tmp_path / "0000000010")
    convert_lingua_to_hf(folder, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True, local_files_only=True)
    ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=1e-4)


def test_training_only_fields_do_not_change_the_hf_model(tmp_path):
    """z-loss, document masking and sliding windows only act in training; the HF model must still load cleanly."""
    model, args = lingua_model(canon_set="ABCD", z_loss=True, z_loss_logz=True, document_mask=True, bos_id=1)
    hf = LlamaCanonForCausalLM.from_pretrained(save_consolidated(model, args, tmp_path / "step"))
    ids = torch.randint(2, VOCAB, (1, 9))  # no BOS: one document, so the masked Lingua forward is plain causal
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=0, atol=1e-4)
