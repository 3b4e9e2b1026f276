"""Shared fixtures: `data` (a tmp folder with a small text source under data/debug) and `lingua_checkpoint` (a factory
of tiny random LMTransformer checkpoints in the consolidated layout, bytes tokenizer)."""

import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest
import torch


def write_text_data(root: Path, documents: int = 400, seed: int = 0, name: str = "debug") -> Path:
    """A lingua data source of short, very regular English-like documents (learnable in a few dozen steps)."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    source = root / name
    source.mkdir(parents=True)
    with open(source / f"{name}.chunk.00.jsonl", "w") as f:
        for _ in range(documents):
            word = rng.choice(words)
            f.write(json.dumps({"text": " ".join([word] * rng.randint(3, 12)) + "."}) + "\n")
    return root


@pytest.fixture
def data(tmp_path):
    write_text_data(tmp_path / "data")
    return tmp_path


def save_lingua_checkpoint(folder: Path, seed: int = 0, **model_fields) -> Path:
    """A random tiny LMTransformer over the bytes tokenizer, saved as <folder>/0000000010/consolidated. Its output rows
    of bytes >= 128 (and BOS/EOS) are zero, so greedy text is ASCII (decodes the same with any byte tokenizer)."""
    from apps.main.transformer import LMTransformer, LMTransformerArgs

    fields = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=258, canon_set="ABCD",
                  qk_norm=True, rope_dim=4, max_seqlen=48, init_base_std=0.3)  # fmt: skip
    fields.update(model_fields)
    args = LMTransformerArgs(**fields)
    torch.manual_seed(seed)
    model = LMTransformer(args)
    model.init_weights()
    with torch.no_grad():
        model.output.weight[128:] = 0
    target = folder / "0000000010" / "consolidated"
    target.mkdir(parents=True)
    params = {"name": "tiny", "dump_dir": str(folder), "steps": 10, "model": asdict(args),
              "data": {"root_dir": None, "sources": {}, "seq_len": args.max_seqlen, "add_bos": True, "add_eos": True,
                       "tokenizer": {"name": "bytes", "path": None}}}  # fmt: skip
    (target / "params.json").write_text(json.dumps(params))
    torch.save({"model": model.state_dict()}, target / "consolidated.pth")
    return target


@pytest.fixture(scope="session")
def lingua_checkpoint(tmp_path_factory):
    """lingua_checkpoint(**model_fields) -> the consolidated folder of a tiny random model (one per distinct call)."""
    made = {}

    def make(**model_fields):
        key = json.dumps(model_fields, sort_keys=True)
        if key not in made:
            made[key] = save_lingua_checkpoint(tmp_path_factory.mktemp("ckpt"), **model_fields)
        return made[key]

    return make
