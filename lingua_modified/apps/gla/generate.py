"""Generate text with a trained GLA5 / GDN2 / Mamba2: apps.main.generate's generator and command line, which load
the linear model when the checkpoint's params.json names a `model_name`.

    python -m apps.gla.generate ckpt=<dump_dir>/checkpoints/<step>/consolidated prompts='[Once upon,The cat]'

Decoding keeps each layer's recurrent, short-conv and Canon states (a LinearCanonCache), so every new token costs the
same whatever the context length; left-padded rows compute what they would alone.
"""

import sys

from apps.main.generate import (
    PackedCausalTransformerGenerator,
    PackedCausalTransformerGeneratorArgs,
    load_consolidated_model_and_tokenizer,
    main,
)

__all__ = [
    "PackedCausalTransformerGenerator",
    "PackedCausalTransformerGeneratorArgs",
    "load_consolidated_model_and_tokenizer",
    "main",
]

if __name__ == "__main__":
    sys.exit(main())
