"""Load a LlamaCanon (or any causal LM) with its tokenizer and generate.

    python -m huggingface.demo_pretrained --model facebook/PhysicsLM4.2__LlamaCanon-1B-Nemo-1T-lr0.003
    python -m huggingface.demo_pretrained --model ./my_converted_model --prompt "The capital of France is"

--model is a hub id or a local folder (Hugging Face layout with a tokenizer). The released hub repos hold the
Lingua checkpoint and a tokenizer wrapper (Llama-2 tokenizer for 1B/3B, Llama-3 for 8B); both load through
trust_remote_code. Greedy decoding by default.
"""

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate with a pretrained LlamaCanon model.")
    parser.add_argument("--model", required=True, help="hub id or local folder")
    parser.add_argument("--prompt", action="append", help="prompt text (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--sample", action="store_true", help="sample (temperature 0.7, top-p 0.9) instead of greedy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    prompts = args.prompt or ["Physics of Language Models studies"]

    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)  # a tokenizer runs no custom code
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True).to(args.device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, return_token_type_ids=False).to(args.device)
    sampling = dict(do_sample=True, temperature=0.7, top_p=0.9) if args.sample else dict(do_sample=False)
    with torch.no_grad():
        output = model.generate(
            **batch, max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
        )
    for prompt, tokens in zip(prompts, output, strict=True):
        completion = tokenizer.decode(tokens[batch["input_ids"].shape[1] :], skip_special_tokens=True)
        print(f"{prompt}{completion}")


if __name__ == "__main__":
    main()
