"""Train GLA5 / GDN2 / Mamba2 (with or without Canon layers):
`python -m apps.gla.train config=apps/gla/configs/gla5_debug.yaml [key.sub=value ...]` (one process), or
`torchrun --nproc-per-node N -m apps.gla.train config=...` (FSDP2 across N processes).

The loop is lingua.training's, shared with apps/main; only the model differs (apps/gla/transformer.py, with its
generation cache in apps/gla/generation_cache.py). The linear recipes' extra TrainArgs keys are accepted:
`eval_account`, `eval_qos` and `exclude` (SLURM options of the evaluation jobs submitted with `async_eval_gpus`;
empty = those of the training job) and `world_size` (informational, unused).
"""

import sys
from dataclasses import dataclass, field

from apps.gla.generation_cache import LinearGenerationCache
from apps.gla.transformer import (
    LMTransformer,
    LMTransformerArgs,
    build_fsdp_grouping_plan,
    get_no_recompute_ops,
    get_num_flop_per_token,
)
from lingua.training import BaseTrainArgs, ModelSpec
from lingua.training import main as training_main


@dataclass
class TrainArgs(BaseTrainArgs):
    model: LMTransformerArgs = field(default_factory=LMTransformerArgs)
    eval_account: str = ""  # SLURM account of submitted eval jobs
    eval_qos: str = ""  # their QOS
    exclude: str = ""  # nodes they must avoid
    world_size: int = -1  # accepted for config compatibility (informational); unused


def non_embedding_parameters(n_params: int, model: LMTransformerArgs) -> int:
    """n_params less the embedding and, when untied, the output head (both vocab_size x dim)."""
    return n_params - model.vocab_size * model.dim * (1 if model.weight_tying else 2)


MODEL = ModelSpec(
    build=LMTransformer,
    model_args=LMTransformerArgs,
    fsdp_grouping_plan=build_fsdp_grouping_plan,
    generation_cache=LinearGenerationCache.for_model,
    no_recompute_ops=get_no_recompute_ops(),
    flops_per_token=lambda n_params, model, seq_len: get_num_flop_per_token(
        non_embedding_parameters(n_params, model), model
    ),
    eval_module="apps.gla.eval",
    eval_job_options=lambda args: dict(account=args.eval_account, qos=args.eval_qos, exclude=args.exclude),
)


def main(argv=None) -> int:
    return training_main(TrainArgs, MODEL, argv)


if __name__ == "__main__":
    sys.exit(main())
