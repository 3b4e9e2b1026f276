"""Evaluate a GLA5 / GDN2 / Mamba2 checkpoint: lm-eval tasks and validation NLL, exactly as apps.main.eval does
(same EvalArgs, command line and result files), whose loader builds the model of the checkpoint's app (found
through each app's ModelSpec).

    python -m apps.gla.eval config=<eval yaml> [ckpt_dir=<step folder or its consolidated/> dump_dir=<new folder>]

The checkpoint's own tokenizer and context length serve, as for Llama, and lm-eval talks to the model through the
same adapter (apps.main.eval.EvalHarnessLM).
"""

import sys

from apps.main.eval import EvalArgs, check_eval_args, launch_eval, main

__all__ = ["EvalArgs", "check_eval_args", "launch_eval", "main"]

if __name__ == "__main__":
    sys.exit(main())
