"""Processes and parallelism: the environment from torchrun or SLURM, the device mesh, and one function that applies
FSDP2, selective activation checkpointing and torch.compile to a plain model (the model knows nothing about them).

One process started with plain `python -m ...` runs without a process group and without FSDP; torchrun or srun
with several tasks initialise gloo on CPU and nccl on GPU.
"""

import atexit
import logging
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger()


@dataclass
class DistributedArgs:
    dp_shard: int = 1
    dp_replicate: int = 1
    tp_size: int = 1
    selective_activation_checkpointing: bool = False
    compile: bool = False
    fsdp_type: str = "no_shard"  # "full_shard" | "no_shard"
    model_dtype: str = "bf16"  # "fp32" | "fp16" | "bf16"
    float8_recipe: str | None = None
    float8_filter: str = r"layers\.[0-9]+\."
    matmul_allow_tf32: bool = False
    detect_anomaly: bool = False
    compile_cache_size_limit: int = 8
    spawn_method: str = "forkserver"  # how the data loader's background process starts: forkserver or spawn


@dataclass
class EnvironmentArgs:
    MKL_SERVICE_FORCE_INTEL: str = "GNU"
    OMP_NUM_THREADS: str = "1"
    MKL_NUM_THREADS: str = "1"
    ENABLE_INTRA_NODE_COMM: str = "1"
    TORCH_NCCL_AVOID_RECORD_STREAMS: str = "1"
    NCCL_IB_TIMEOUT: str = "22"
    NCCL_DEBUG: str = "INFO"
    TORCH_NCCL_ASYNC_ERROR_HANDLING: str = "1"


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def is_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def is_slurm_job() -> bool:
    return "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ and not is_torchrun()


def get_global_rank() -> int:
    if is_torchrun():
        return int(os.environ["RANK"])
    if is_slurm_job():
        return int(os.environ["SLURM_PROCID"])
    return 0


def get_local_rank() -> int:
    if is_torchrun():
        return int(os.environ["LOCAL_RANK"])
    if is_slurm_job():
        return int(os.environ["SLURM_LOCALID"])
    return 0


def get_world_size() -> int:
    if is_torchrun():
        return int(os.environ["WORLD_SIZE"])
    if is_slurm_job():
        return int(os.environ["SLURM_NTASKS"])
    return 1


def get_is_master() -> bool:
    return get_global_rank() == 0


@cache
def get_master_addr() -> str:
    if is_torchrun():
        return os.environ["MASTER_ADDR"]
    if is_slurm_job():
        hosts = subprocess.check_output(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], text=True)
        return hosts.split()[0]
    return "127.0.0.1"


def get_master_port(job_id: int) -> int:
    """The same port on every task of a job (seeded by the job id), in [20000, 60000]."""
    if is_torchrun():
        return int(os.environ["MASTER_PORT"])
    return random.Random(job_id).randint(20_000, 60_000)


def setup_env(env_args: EnvironmentArgs) -> None:
    """Export the configured variables, and a private Triton cache removed at exit."""
    triton_cache = tempfile.mkdtemp(prefix="triton-")
    atexit.register(shutil.rmtree, triton_cache, ignore_errors=True)
    values = dict(vars(env_args), TRITON_CACHE_DIR=triton_cache)
    for name, value in values.items():
        if os.environ.get(name) != str(value):
            os.environ[name] = str(value)
            logger.info(f"environment: {name}={value}")


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


SPAWN_METHODS = ("forkserver", "spawn")  # fork is unsafe in a process that holds threads (torch's) or CUDA


def check_spawn_method(args: DistributedArgs) -> None:
    if args.spawn_method not in SPAWN_METHODS:
        raise ValueError(
            f"distributed.spawn_method={args.spawn_method!r}; expected one of {', '.join(SPAWN_METHODS)} (how "
            "helper processes such as the data loader's start)"
        )


def setup_torch_distributed(args: DistributedArgs) -> torch.device:
    """Join the process group when there is more than one process; returns this process's device."""
    local_rank = get_local_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        torch.backends.cuda.matmul.allow_tf32 = args.matmul_allow_tf32
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    torch.autograd.set_detect_anomaly(args.detect_anomaly)
    if get_world_size() > 1 and not dist.is_initialized():
        os.environ.setdefault("RANK", str(get_global_rank()))
        os.environ.setdefault("WORLD_SIZE", str(get_world_size()))
        os.environ.setdefault("MASTER_ADDR", get_master_addr())
        os.environ.setdefault("MASTER_PORT", str(get_master_port(int(os.environ.get("SLURM_JOB_ID", -1)))))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return device


def get_device_mesh(args: DistributedArgs):
    """The data-parallel mesh: ("dp_replicate", "dp_shard") for HSDP / no_shard, ("dp_replicate",) otherwise; None
    for a single process."""
    if not dist.is_initialized():
        return None
    if args.tp_size != 1:
        raise ValueError(f"distributed.tp_size={args.tp_size}; tensor parallelism is not supported, expected 1")
    dims, names = [args.dp_replicate], ["dp_replicate"]
    if args.dp_shard > 1 or args.fsdp_type == "no_shard":
        dims.append(args.dp_shard)
        names.append("dp_shard")
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type(), tuple(dims), mesh_dim_names=tuple(names))


def dp_coordinates(mesh) -> tuple[int, int]:
    """(dp_rank, dp_degree) of this process."""
    if mesh is None:
        return 0, 1
    rank = mesh.get_local_rank("dp_replicate")
    degree = mesh["dp_replicate"].size()
    if "dp_shard" in mesh.mesh_dim_names:
        rank = rank * mesh["dp_shard"].size() + mesh.get_local_rank("dp_shard")
        degree *= mesh["dp_shard"].size()
    return rank, degree


def resolve_dp_sizes(args: DistributedArgs, world_size: int) -> None:
    """Fill dp_replicate from the world size (the recipes leave dp_shard=1), checking divisibility."""
    if args.dp_replicate * args.dp_shard * args.tp_size == world_size:
        return
    if world_size % (args.dp_shard * args.tp_size):
        raise ValueError(
            f"world size {world_size} is not divisible by dp_shard*tp_size = {args.dp_shard * args.tp_size}"
        )
    args.dp_replicate = world_size // (args.dp_shard * args.tp_size)


def parallelize_model(
    model: nn.Module,
    mesh,
    args: DistributedArgs,
    fsdp_grouping_plan: list[tuple[str, bool]],
    no_recompute_ops=None,
) -> nn.Module:
    """Selective activation checkpointing per block, then FSDP2 (full_shard or no_shard) with mixed precision, then
    torch.compile. Returns the module to train (the same object: every wrapper works in place)."""
    if args.float8_recipe is not None:
        raise ValueError(f"distributed.float8_recipe={args.float8_recipe!r}; float8 training is not supported here")
    if args.fsdp_type not in ("full_shard", "no_shard"):
        raise ValueError(f"distributed.fsdp_type={args.fsdp_type!r}; expected 'full_shard' or 'no_shard'")
    if args.model_dtype not in DTYPES:
        raise ValueError(f"distributed.model_dtype={args.model_dtype!r}; expected one of {sorted(DTYPES)}")

    if args.selective_activation_checkpointing:
        _checkpoint_blocks(model, no_recompute_ops or default_no_recompute_ops())

    if mesh is not None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=DTYPES[args.model_dtype], reduce_dtype=torch.float32)
        dp_mesh = mesh if len(mesh.mesh_dim_names) == 2 else mesh["dp_replicate"]
        for name, reshard in fsdp_grouping_plan:
            fully_shard(model.get_submodule(name), mesh=dp_mesh, mp_policy=policy, reshard_after_forward=reshard)
        fully_shard(model, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=True)
    elif args.model_dtype != "fp32":
        _autocast_forward(model, DTYPES[args.model_dtype])

    if args.compile:
        torch._dynamo.config.cache_size_limit = args.compile_cache_size_limit
        model.compile()
    return model


def default_no_recompute_ops() -> set:
    """Ops whose outputs selective activation checkpointing keeps: matmuls and attention kernels (the expensive ones);
    everything else (norms, activations, Canon convs) is recomputed in backward."""
    aten = torch.ops.aten
    ops = {aten.mm.default, aten._scaled_dot_product_efficient_attention.default}
    ops.add(aten._scaled_dot_product_flash_attention.default)
    ops.add(torch.ops._c10d_functional.reduce_scatter_tensor.default)
    return ops


def _checkpoint_blocks(model: nn.Module, no_recompute_ops) -> None:
    """Recompute each transformer block in backward, keeping the outputs of `no_recompute_ops` (matmuls, attention)."""
    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in no_recompute_ops else CheckpointPolicy.PREFER_RECOMPUTE

    for block in model.layers:
        forward = block.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            return checkpoint(
                _forward,
                *args,
                use_reentrant=False,
                context_fn=lambda: create_selective_checkpoint_contexts(policy),
                **kwargs,
            )

        block.forward = checkpointed


def _autocast_forward(model: nn.Module, dtype: torch.dtype) -> None:
    """Mixed precision without FSDP (one process): weights stay fp32, matmuls run in `dtype`."""
    forward = model.forward

    def autocast_forward(*args, **kwargs):
        with torch.autocast(device_type=next(model.parameters()).device.type, dtype=dtype):
            return forward(*args, **kwargs)

    model.forward = autocast_forward


def _all_reduce(values: list[float], op) -> list[float]:
    """`values` reduced over all processes (float64, on the device the backend needs); unchanged in one process."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def all_reduce_max(value: float) -> float:
    return _all_reduce([value], dist.ReduceOp.MAX)[0]


def all_reduce_mean(value: float) -> float:
    world = dist.get_world_size() if dist.is_initialized() else 1
    return _all_reduce([value], dist.ReduceOp.SUM)[0] / world


def all_reduce_sum(values: list[float]) -> list[float]:
    return _all_reduce(values, dist.ReduceOp.SUM)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def clean_up() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
