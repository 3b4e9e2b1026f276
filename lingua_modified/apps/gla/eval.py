"""Evaluate a GLA5 / GDN2 / Mamba2 checkpoint: lm-eval tasks and validation NLL, exactly as apps.main.eval does
(same EvalArgs, command line and result files), whose loader builds the linear model when the checkpoint's
params.json names a `model_name`.

    python -m apps.gla.eval config=<eval yaml> [ckpt_dir=<step folder or its consolidated/> dump_dir=<new folder>]

The reference used lm-eval's HFLM over the Hugging Face model with a Hub tokenizer, a fixed max_length of 2048 and
EOS/padding forced to the BOS id; here the checkpoint's own tokenizer and context length serve, as for Llama.
"""

import sys

from apps.main.eval import EvalArgs, check_eval_args, launch_eval, main

__all__ = ["EvalArgs", "check_eval_args", "launch_eval", "main"]

if __name__ == "__main__":
    sys.exit(main())
