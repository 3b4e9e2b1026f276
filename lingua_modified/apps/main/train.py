"""Train Llama / LlamaCanon: `python -m apps.main.train config=apps/main/configs/debug.yaml [key.sub=value ...]`
(one process), or `torchrun --nproc-per-node N -m apps.main.train config=...` (FSDP2 across N processes)."""

import sys
from dataclasses import dataclass, field

from apps.main.transformer import (
    LMTransformer,
    LMTransformerArgs,
    build_fsdp_grouping_plan,
    get_no_recompute_ops,
    get_num_flop_per_token,
)
from lingua.generation_cache import InferenceCache
from lingua.training import BaseTrainArgs, ModelSpec
from lingua.training import main as training_main


@dataclass
class TrainArgs(BaseTrainArgs):
    model: LMTransformerArgs = field(default_factory=LMTransformerArgs)


MODEL = ModelSpec(
    build=LMTransformer,
    model_args=LMTransformerArgs,
    fsdp_grouping_plan=build_fsdp_grouping_plan,
    generation_cache=InferenceCache.for_model,
    no_recompute_ops=get_no_recompute_ops(),
    flops_per_token=lambda n_params, model, seq_len: get_num_flop_per_token(
        n_params - model.vocab_size * model.dim, model.n_layers, model.dim, seq_len
    ),
    eval_module="apps.main.eval",
)


def main(argv=None) -> int:
    return training_main(TrainArgs, MODEL, argv)


if __name__ == "__main__":
    sys.exit(main())
