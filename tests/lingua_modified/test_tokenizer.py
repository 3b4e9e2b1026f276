"""The tokenizers: ids and specials against independent computations, round trips, and clear errors."""

import base64

import pytest
import sentencepiece as spm

from lingua import tokenizer as tokenizer_module
from lingua.tokenizer import TokenizerArgs, build_tokenizer, read_bpe_ranks

TEXT = "Hello, wörld! 123 ✓\nsecond line"


def test_bytes_ids_specials_and_round_trip():
    tok = build_tokenizer("bytes")
    assert (tok.n_words, tok.bos_id, tok.eos_id) == (258, 256, 257)
    ids = tok.encode(TEXT, add_bos=True, add_eos=True)
    assert ids == [256, *TEXT.encode("utf-8"), 257]
    assert tok.encode(TEXT, add_bos=False, add_eos=False) == list(TEXT.encode("utf-8"))
    assert tok.decode(ids) == TEXT  # BOS/EOS have no bytes and vanish
    assert tok.decode(list("é".encode())[:1]) == "\\xc3"  # half a character stays visible


def test_mock_hands_back_ids():
    tok = build_tokenizer("mock")
    assert tok.n_words == 256 and tok.bos_id is None and tok.eos_id is None
    assert tok.encode([5, 7, 9], add_bos=True, add_eos=True) == [5, 7, 9]
    with pytest.raises(TypeError, match="not text"):
        tok.encode("text")


def test_token_ids_tokenizer():
    tok = build_tokenizer(TokenizerArgs(name="tokens"))
    assert (tok.n_words, tok.bos_id, tok.eos_id) == (10000, 9999, 9998)  # the synthetic generators' BOS/EOS
    assert tok.encode("3 74\n100", add_bos=True, add_eos=True) == [9999, 3, 74, 100, 9998]
    assert tok.decode([9999, 3, 74]) == "9999 3 74"
    assert tok.encode(tok.decode([0, 5, 9999])) == [0, 5, 9999]
    small = build_tokenizer("tokens", vocab_size=50)
    assert (small.n_words, small.bos_id, small.eos_id) == (50, 49, 48)
    with pytest.raises(ValueError, match="token id 50 is outside the vocabulary 0..49"):
        small.encode("1 50")
    with pytest.raises(ValueError, match="not a list of token ids"):
        small.encode("1 two")
    with pytest.raises(ValueError, match="vocab_size=2"):
        build_tokenizer("tokens", vocab_size=2)


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "tiny.model"
    sentences = [f"the quick brown fox {i} jumps over the lazy dog number {i * 7}" for i in range(200)]
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=f, vocab_size=60, model_type="bpe", minloglevel=2
        )
    return str(path), spm.SentencePieceProcessor(model_file=str(path))


def test_sentencepiece(sp_model):
    path, reference = sp_model
    tok = build_tokenizer("sp", path)
    assert (tok.n_words, tok.bos_id, tok.eos_id) == (60, reference.bos_id(), reference.eos_id())
    assert (tok.bos_id, tok.eos_id) == (1, 2)  # sentencepiece's defaults, as in Llama-2
    text = "the lazy fox jumps"
    assert tok.encode(text, add_bos=True, add_eos=True) == [1, *reference.encode(text), 2]
    assert tok.decode(tok.encode(text, add_bos=True, add_eos=True)) == text


def write_ranks(path, merges=(b"th", b"he", b"the", b"  ")):
    """All 256 single bytes (ranks 0..255, required by byte-level BPE), then a few merges."""
    tokens = [bytes([b]) for b in range(256)] + list(merges)
    path.write_text("".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)))
    return str(path), len(tokens)


def test_tiktoken_specials_ids_and_round_trip(tmp_path):
    path, n_ranks = write_ranks(tmp_path / "tiny.tiktoken")
    tok = build_tokenizer("tiktoken", path)
    assert (tok.bos_id, tok.eos_id, tok.n_words) == (n_ranks, n_ranks + 1, n_ranks + 256)
    # "the" merges t+h -> "th" (256), then "th"+"e" -> "the" (258); " the" keeps its space as a byte
    assert tok.encode("the", add_bos=True, add_eos=True) == [n_ranks, 258, n_ranks + 1]
    assert tok.encode(" the", add_bos=False, add_eos=False) == [ord(" "), 258]
    assert tok.decode(tok.encode(TEXT, add_bos=False, add_eos=False)) == TEXT
    # a special token's text inside a document is ordinary text, never the control id
    ids = tok.encode("<|begin_of_text|>", add_bos=False, add_eos=False)
    assert n_ranks not in ids and tok.decode(ids) == "<|begin_of_text|>"
    assert tok.model.encode_single_token("<|fim_suffix|>") == n_ranks + 255
    assert tok.model.encode_single_token("<|reserved_special_token_4|>") == n_ranks + 4


def test_tiktoken_long_text_in_pieces(tmp_path, monkeypatch):
    path, _ = write_ranks(tmp_path / "tiny.tiktoken")
    tok = build_tokenizer("tiktoken", path)
    monkeypatch.setattr(tokenizer_module, "TIKTOKEN_PIECE_CHARS", 7)
    text = "the theme of these three thermos " * 5
    ids = tok.encode(text, add_bos=False, add_eos=False)
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    assert ids == [i for piece in pieces for i in tok.model.encode_ordinary(piece)]
    assert tok.decode(ids) == text


def test_tiktoken_ranks_file_rewritten_in_place_is_reread(tmp_path):
    path, n_ranks = write_ranks(tmp_path / "ranks.tiktoken")
    assert build_tokenizer("tiktoken", path).bos_id == n_ranks
    path, n_ranks = write_ranks(tmp_path / "ranks.tiktoken", merges=(b"th",))
    assert build_tokenizer("tiktoken", path).bos_id == n_ranks


def test_bad_ranks_file_names_the_line(tmp_path):
    path = tmp_path / "bad.tiktoken"
    path.write_text("dGg= 0\nnot-a-rank-line\n")
    with pytest.raises(ValueError, match=r"bad.tiktoken:2: expected 'base64-token rank'"):
        read_bpe_ranks(str(path))


def test_build_errors(tmp_path):
    with pytest.raises(ValueError, match="tokenizer name 'gpt'; expected one of bytes, mock, sp, tiktoken, tokens"):
        build_tokenizer("gpt")
    with pytest.raises(FileNotFoundError, match="the sp tokenizer needs its model file"):
        build_tokenizer("sp", str(tmp_path / "missing.model"))
    with pytest.raises(FileNotFoundError, match="the tiktoken tokenizer needs its model file"):
        build_tokenizer(TokenizerArgs(name="tiktoken"))
