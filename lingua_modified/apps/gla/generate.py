"""Generate text with a trained GLA5 / GDN2 / Mamba2: apps.main.generate's generator and command line, which serve
the checkpoints of every app (the linear models' ModelSpec declares their generation cache).

    python -m apps.gla.generate ckpt=<dump_dir>/checkpoints/<step>/consolidated prompts='[Once upon,The cat]'

Decoding keeps each layer's recurrent, short-conv and Canon states (apps/gla/generation_cache.py), so every new token
costs the same whatever the context length; left-padded rows compute what they would alone.
"""

import sys

from apps.main.generate import (
    LeftPaddedGenerator,
    LeftPaddedGeneratorArgs,
    load_consolidated_model_and_tokenizer,
    main,
)

__all__ = ["LeftPaddedGenerator", "LeftPaddedGeneratorArgs", "load_consolidated_model_and_tokenizer", "main"]

if __name__ == "__main__":
    sys.exit(main())
