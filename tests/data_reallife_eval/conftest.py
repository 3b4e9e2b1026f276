"""A tiny byte-level BPE tokenizer (trained here, offline) and a tiny LlamaCanon saved as a Hugging Face folder."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from data_reallife_eval.background import default_sentences
from data_synthetic_pretrain.fields import first_names, last_names, middle_names
from huggingface import LlamaCanonConfig, LlamaCanonForCausalLM


def train_tokenizer(vocab_size=400) -> PreTrainedTokenizerFast:
    """Byte-level BPE: encodes any text; adds <bos> to plain text like Llama's tokenizer does."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(default_sentences()[:2000]) + [" ".join(first_names() + middle_names() + last_names())]
    corpus += [f"was born in the year of {y}." for y in range(1950, 2010)]
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def tiny_model(vocab_size: int, seed=0) -> LlamaCanonForCausalLM:
    torch.manual_seed(seed)
    config = LlamaCanonConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        canon_set="ABCD",
        initializer_range=0.3,  # spread-out logits: greedy choices far from ties
    )
    return LlamaCanonForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer):
    """A saved HF folder: LlamaCanon weights + remote code + the tokenizer."""
    folder = tmp_path_factory.mktemp("tiny_llamacanon")
    tiny_model(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def make_tiny_model():
    return tiny_model
