"""apps.main.generate: the cached (prefill + decode) path against full forwards, left-padded batches, stop strings,
sampling filters, checkpoint loading and the command line."""

import pytest
import torch

from apps.main.generate import LeftPaddedGenerator as PackedCausalTransformerGenerator
from apps.main.generate import LeftPaddedGeneratorArgs as PackedCausalTransformerGeneratorArgs
from apps.main.generate import (
    cut_at_stop,
    load_consolidated_model_and_tokenizer,
    main,
    sample_tokens,
)
from lingua.generation_cache import InferenceCache

PROMPTS = ["The cat sat", "a", "Hello, world! How", "xyz"]
VARIANTS = {
    "llama": dict(canon_set="", qk_norm=False),
    "canon-ABCD": dict(),
    "canon-bias-act-k3-window": dict(canon_bias=True, canon_activation=True, canon_kernel=3, sliding_window=5),
}


def generator_for(folder, **fields):
    model, tokenizer = load_consolidated_model_and_tokenizer(folder, "cpu", "fp32")
    cfg = PackedCausalTransformerGeneratorArgs(dtype="fp32", device="cpu", **fields)
    return PackedCausalTransformerGenerator(cfg, model, tokenizer)


def argmax_by_full_forwards(model, prompt, n, eos):
    """The reference: re-run the whole sequence for every new token and take the argmax."""
    ids, new = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            token = model(torch.tensor([ids]))[0, -1].argmax().item()
            if token == eos:
                break
            ids.append(token)
            new.append(token)
    return new


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_generation_equals_argmax_of_full_forwards(lingua_checkpoint, variant):
    folder = lingua_checkpoint(**VARIANTS[variant])
    batched = generator_for(folder, max_gen_len=8, max_tokens=4096)  # all four prompts in one left-padded batch
    small = generator_for(folder, max_gen_len=8, max_tokens=34)  # a budget of 34 tokens per batch
    prompts = [batched.encode(p) for p in PROMPTS]
    expected = [argmax_by_full_forwards(batched.model, p, 8, batched.tokenizer.eos_id) for p in prompts]
    assert list(batched._batches(prompts, 8)) == [[2, 0, 3, 1]]
    assert list(small._batches(prompts, 8)) == [[2], [0], [3, 1]]  # longest first; the two short ones together
    assert batched.generate_tokens(prompts) == expected
    assert small.generate_tokens(prompts) == expected
    assert batched.generate(PROMPTS) == [batched.tokenizer.decode(t) for t in expected]


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_logits_equal_full_forward_logits_for_padded_rows(lingua_checkpoint, variant):
    model, _ = load_consolidated_model_and_tokenizer(lingua_checkpoint(**VARIANTS[variant]))
    torch.manual_seed(1)
    rows = [torch.randint(0, 128, (n,)).tolist() for n in (9, 3, 6)]
    continuation = torch.randint(0, 128, (3, 5))
    length = 9
    padded = torch.tensor([[0] * (length - len(r)) + r for r in rows])
    cache = InferenceCache(len(model.layers), length + 5, torch.tensor([length - len(r) for r in rows]))
    with torch.no_grad():
        steps = [model(padded, cache=cache)[:, -1]]
        for t in range(4):  # one token per call, then the last one as a chunk of one
            steps.append(model(continuation[:, t : t + 1], cache=cache)[:, -1])
        for row, prompt in enumerate(rows):
            full = model(torch.tensor([prompt + continuation[row, :4].tolist()]))[0]
            expected = full[len(prompt) - 1 :]
            got = torch.stack([s[row] for s in steps])
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_stop_strings_end_generation_and_max_gen_len_bounds_it(lingua_checkpoint):
    generator = generator_for(lingua_checkpoint(), max_gen_len=20)
    prompt = generator.encode("The cat sat")
    free = generator.generate_tokens([prompt])[0]
    assert len(free) == 20  # no EOS (its output row is zero): max_gen_len tokens
    # the first printable byte that did not occur before it: generation must stop right after it
    k = next(i for i in range(3, 20) if 32 < free[i] < 127 and free[i] not in free[:i])
    stop = chr(free[k])
    assert generator.generate_tokens([prompt], until=[stop])[0] == free[: k + 1]
    text = generator.generate(["The cat sat"], until=[stop])[0]
    assert text.endswith(stop) and cut_at_stop(text, [stop]) == generator.tokenizer.decode(free[:k])
    assert generator.generate(["The cat sat"], max_gen_len=4) == [generator.tokenizer.decode(free[:4])]


def test_cut_at_stop_keeps_text_before_the_first_stop_string():
    assert cut_at_stop("answer: 42\n\nQ:", ["\n\n", "Q:"]) == "answer: 42"
    assert cut_at_stop("no stop here", ["\n"]) == "no stop here"
    assert cut_at_stop("a b", []) == "a b"


def test_sampling_filters():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]])).repeat(2000, 1)
    torch.manual_seed(0)
    assert (sample_tokens(logits) == 0).all()
    assert (sample_tokens(logits, temperature=1.0, top_k=1) == 0).all()
    assert set(sample_tokens(logits, temperature=1.0, top_k=2).tolist()) == {0, 1}
    assert set(sample_tokens(logits, temperature=1.0, top_p=0.5).tolist()) == {0, 1}  # 0.4 + 0.3 covers 0.5
    assert set(sample_tokens(logits, temperature=1.0, top_p=0.3).tolist()) == {0}
    counts = torch.bincount(sample_tokens(logits, temperature=1.0), minlength=4) / 2000
    torch.testing.assert_close(counts, torch.tensor([0.4, 0.3, 0.2, 0.1]), atol=0.05, rtol=0)


def test_sampled_generation_is_reproducible_and_stays_in_the_top_k(lingua_checkpoint):
    generator = generator_for(lingua_checkpoint(), max_gen_len=8, temperature=1.0, top_k=3)
    torch.manual_seed(0)
    first = generator.generate(PROMPTS)
    torch.manual_seed(0)
    assert generator.generate(PROMPTS) == first
    greedy = generator_for(lingua_checkpoint(), max_gen_len=8, temperature=1.0, top_k=1)
    assert greedy.generate(PROMPTS) == generator_for(lingua_checkpoint(), max_gen_len=8).generate(PROMPTS)


def test_command_line_prints_prompt_and_generation(lingua_checkpoint, tmp_path, capsys):
    folder = lingua_checkpoint()
    expected = generator_for(folder, max_gen_len=6).generate(["The cat", "Hi"])
    assert main([f"ckpt={folder}", "prompts=[The cat,Hi]", "max_gen_len=6", "dtype=fp32", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert f"The cat{expected[0]}\n" in out and f"Hi{expected[1]}\n" in out
    (tmp_path / "prompts.txt").write_text("The cat\n\nHi\n")
    assert main([f"ckpt={folder}", f"prompts_file={tmp_path / 'prompts.txt'}", "max_gen_len=6", "dtype=fp32"]) == 0
    assert capsys.readouterr().out == out


def test_a_folder_without_consolidated_files_is_one_clear_error(lingua_checkpoint, tmp_path, capsys):
    step = lingua_checkpoint().parent
    assert main([f"ckpt={step}", "prompts=[a]"]) == 1
    assert "is not a consolidated checkpoint (expected consolidated.pth and params.json)" in capsys.readouterr().err
    (tmp_path / ".metadata").write_text("")
    with pytest.raises(FileNotFoundError, match="python -m lingua.checkpoint consolidate"):
        load_consolidated_model_and_tokenizer(tmp_path)
    assert main([f"ckpt={lingua_checkpoint()}", "prompts=[a]", "max_gen_len=0"]) == 1
    assert "max_gen_len=0" in capsys.readouterr().err
