"""setup/download_tokenizer.py, offline: the Hub download is a stand-in that copies from a local folder; the tiktoken
fetch is a stand-in encoding. What the script writes is where the recipes look, and the trainer's tokenizers load it."""

import base64
import os
from pathlib import Path

import pytest
from setup import download_tokenizer as dt

from lingua.tokenizer import build_tokenizer


class FakeHub:
    def __init__(self, root: Path, status: int | None = None):
        self.root, self.status, self.calls = root, status, []

    def __call__(self, repo_id, filename, token):
        self.calls.append((repo_id, filename, token))
        if self.status:
            error = RuntimeError("refused")
            error.response = type("Response", (), {"status_code": self.status})()
            raise error
        return str(self.root / repo_id / filename)


def sentencepiece_model(folder: Path) -> Path:
    """A tiny real SentencePiece model (BOS 1, EOS 2 as in Llama-2's)."""
    spm = pytest.importorskip("sentencepiece")
    text = folder / "text.txt"
    text.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)))
    prefix = folder / "toy"
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(prefix), vocab_size=40, bos_id=1, eos_id=2,
                                   unk_id=0, pad_id=-1, minloglevel=2)  # fmt: skip
    return prefix.with_suffix(".model")


@pytest.mark.parametrize("name", ["llama2", "llama3", "gemma"])
def test_hub_tokenizers_land_where_the_recipes_look(name, tmp_path, monkeypatch):
    repo_id, filename = dt.TOKENIZERS[name]
    source = tmp_path / "hub" / repo_id / filename
    source.parent.mkdir(parents=True)
    source.write_bytes(sentencepiece_model(tmp_path).read_bytes())
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(dt, "hf_hub_download", fake)
    save_dir = tmp_path / "tokenizers" / name
    assert dt.main([name, str(save_dir), "--api_key", "hf_secret"]) == 0
    assert fake.calls == [(repo_id, filename, "hf_secret")]
    assert sorted(p.name for p in save_dir.iterdir()) == ["tokenizer.model"]  # llama3's original/ folder flattened
    assert (save_dir / "tokenizer.model").read_bytes() == source.read_bytes()
    tokenizer = build_tokenizer("sp", str(save_dir / "tokenizer.model"))
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.n_words) == (1, 2, 40)


def test_a_gated_repository_says_how_to_get_access(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dt, "hf_hub_download", FakeHub(tmp_path, status=401))
    assert dt.main(["llama2", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "meta-llama/Llama-2-7b" in err and "gated" in err and "--api_key" in err and "settings/tokens" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_other_names_are_tiktoken_encodings_cached_in_save_dir(tmp_path, monkeypatch):
    import tiktoken

    ranks = {bytes([b]): b for b in range(256)} | {b"th": 256, b"the": 257}
    seen = {}

    def fake_get_encoding(name):
        seen["cache"] = os.environ.get("TIKTOKEN_CACHE_DIR")
        if name != "toy_base":
            raise ValueError(f"Unknown encoding {name}")
        return tiktoken.Encoding(name=name, pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={})

    monkeypatch.setattr(tiktoken, "get_encoding", fake_get_encoding)
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    save_dir = tmp_path / "tokenizers" / "toy"
    assert dt.main(["toy_base", str(save_dir)]) == 0
    assert seen["cache"] == str(save_dir) and "TIKTOKEN_CACHE_DIR" not in os.environ
    lines = (save_dir / "toy_base.tiktoken").read_text().splitlines()
    assert lines[-1] == f"{base64.b64encode(b'the').decode()} 257" and len(lines) == 258
    tokenizer = build_tokenizer("tiktoken", str(save_dir / "toy_base.tiktoken"))
    assert (tokenizer.bos_id, tokenizer.n_words) == (258, 258 + 256)
    assert tokenizer.decode(tokenizer.encode("the theme")) == "the theme"


def test_an_unknown_name_is_one_clear_error(tmp_path, monkeypatch, capsys):
    import tiktoken

    def unknown(name):
        raise ValueError(f"Unknown encoding {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", unknown)
    assert dt.main(["llama4", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "'llama4' is neither one of ['gemma', 'llama2', 'llama3'] nor a tiktoken encoding" in err
