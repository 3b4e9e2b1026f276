"""The training loop shared by every app (apps/main for Llama/LlamaCanon, apps/gla for the linear models).

An app supplies its TrainArgs (the common fields below plus its own `model` dataclass) and a ModelSpec saying how
to build the model and how to parallelise it; everything else (data, optimisation, checkpoints, metrics,
preemption) lives here once.
"""

import gc
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .args import dump_config
from .checkpoint import CheckpointArgs, CheckpointManager
from .data import DataArgs, build_dataloader_from_args, init_dataloader_state_from_args
from .distributed import (
    DistributedArgs,
    EnvironmentArgs,
    all_reduce_max,
    all_reduce_mean,
    barrier,
    clean_up,
    dp_coordinates,
    get_device_mesh,
    get_global_rank,
    get_is_master,
    get_world_size,
    is_slurm_job,
    parallelize_model,
    resolve_dp_sizes,
    setup_env,
    setup_torch_distributed,
)
from .logger import init_logger
from .metrics import LoggingArgs, MemoryMonitor, MetricLogger
from .optim import OptimArgs, build_optimizer
from .profiling import ProfilerArgs, maybe_run_profiler
from .tokenizer import build_tokenizer

logger = logging.getLogger()


@dataclass
class BaseTrainArgs:
    """The fields every app's TrainArgs has, in the reference's order; apps redefine `model` with their dataclass."""

    name: str = "lingua"
    dump_dir: str = ""
    seed: int = 42
    grad_acc_steps: int = 1
    gc_collect_freq: int = 1000
    probe_freq: int | None = None
    steps: int = 1000
    data: DataArgs = field(default_factory=DataArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    model: Any = None
    distributed: DistributedArgs = field(default_factory=DistributedArgs)
    env: EnvironmentArgs = field(default_factory=EnvironmentArgs)
    checkpoint: CheckpointArgs = field(default_factory=CheckpointArgs)
    profiling: ProfilerArgs = field(default_factory=ProfilerArgs)
    logging: LoggingArgs = field(default_factory=LoggingArgs)
    async_eval_gpus: int | None = None
    eval: Any | None = None


@dataclass
class ModelSpec:
    """How an app builds and parallelises its model."""

    build: Callable[[Any], nn.Module]  # model args -> module (called on the meta device)
    fsdp_grouping_plan: Callable[[Any], list[tuple[str, bool]]]
    no_recompute_ops: set = field(default_factory=set)
    flops_per_token: Callable[[int, Any, int], float] = lambda n_params, model_args, seq_len: 6.0 * n_params


@dataclass
class TrainState:
    step: int  # optimizer steps done
    acc_step: int  # micro-batch index inside gradient accumulation
    scheduler: Any
    data_loader_state: dict

    def state_dict(self) -> dict:
        return dict(
            step=self.step,
            acc_step=self.acc_step,
            data_loader_state=self.data_loader_state,
            scheduler=self.scheduler.state_dict(),
        )

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.acc_step = state["acc_step"]
        self.data_loader_state = state["data_loader_state"]
        self.scheduler.load_state_dict(state["scheduler"])


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. a non-finite loss); the newest checkpoint is left as it was."""


def validate_train_args(args: BaseTrainArgs, tokenizer, world_size: int) -> None:
    vocab_size = tokenizer.n_words
    if not args.dump_dir:
        raise ValueError("dump_dir is empty; expected the folder where this run writes checkpoints and logs")
    if args.model.vocab_size < 0:
        args.model.vocab_size = vocab_size
    elif args.model.vocab_size < vocab_size:
        raise ValueError(f"model.vocab_size={args.model.vocab_size} but the tokenizer has {vocab_size} tokens")
    if args.checkpoint.path is None:
        args.checkpoint.path = os.path.join(args.dump_dir, "checkpoints")
    init_dataloader_state_from_args(args.data, 0, 1)  # checks the data settings and finds the files, writing nothing
    resolve_dp_sizes(args.distributed, world_size)
    if args.distributed.fsdp_type == "no_shard" and args.distributed.dp_shard != 1:
        raise ValueError(f"distributed.fsdp_type 'no_shard' needs dp_shard=1, got {args.distributed.dp_shard}")
    if args.grad_acc_steps < 1:
        raise ValueError(f"grad_acc_steps={args.grad_acc_steps}; expected at least 1")
    if args.probe_freq is not None:
        raise ValueError("probe_freq is set; activation probing is not supported, expected null")
    args.model.max_seqlen = args.data.seq_len
    if getattr(args.model, "bos_id", 0) < 0 and tokenizer.bos_id is not None:
        args.model.bos_id = tokenizer.bos_id
    if args.logging.wandb is not None:
        args.logging.wandb.name = args.name


class StopRequest:
    """SIGUSR2 (SLURM's warning before the time limit) and SIGTERM set a flag; the loop checkpoints and exits at the
    end of the current step."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        logger.warning(f"received signal {signal.Signals(signum).name}: checkpointing at the end of this step")
        self.requested = True


def check_model_values(model: nn.Module) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if local.numel() and not torch.isfinite(local).all():
            logger.warning(f"{name} has non-finite values after initialisation")


def train(args: BaseTrainArgs, spec: ModelSpec) -> None:
    tokenizer = build_tokenizer(args.data.tokenizer)
    validate_train_args(args, tokenizer, get_world_size())
    if get_is_master():
        os.makedirs(args.dump_dir, exist_ok=True)
        dump_config(args, os.path.join(args.dump_dir, "config.yaml"))
    init_logger(
        os.path.join(args.dump_dir, "train.log") if get_is_master() else None,
        rank=None if is_slurm_job() else get_global_rank(),
    )
    stop = StopRequest()
    setup_env(args.env)
    device = setup_torch_distributed(args.distributed)
    try:
        _train(args, spec, device, stop)
    finally:
        clean_up()


def _train(args: BaseTrainArgs, spec: ModelSpec, device: torch.device, stop: StopRequest) -> None:
    mesh = get_device_mesh(args.distributed)
    dp_rank, dp_degree = dp_coordinates(mesh)
    torch.manual_seed(args.seed)
    with torch.device("meta"):
        model = spec.build(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(f"model with {n_params:,} parameters")
    model = parallelize_model(model, mesh, args.distributed, spec.fsdp_grouping_plan(args.model), spec.no_recompute_ops)
    model.to_empty(device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.model.seed)
        model.init_weights()
    check_model_values(model)
    memory = MemoryMonitor(device)

    optimizer, scheduler = build_optimizer(model, args.optim, args.steps)
    state = TrainState(0, 0, scheduler, init_dataloader_state_from_args(args.data, dp_rank, dp_degree))
    checkpoint = CheckpointManager(args.checkpoint, args.dump_dir, dp_rank)
    checkpoint.load(model, optimizer, state)
    flops_per_token = spec.flops_per_token(n_params, args.model, args.data.seq_len)

    gc.disable()
    model.train()
    saved = False  # also when a resumed run has nothing left to do (the reference crashed there)
    with ExitStack() as stack:
        metric_logger = stack.enter_context(
            MetricLogger(os.path.join(args.dump_dir, "metrics.jsonl"), args.logging.wandb, args)
            if get_is_master()
            else _NoMetrics()
        )
        batches = stack.enter_context(build_dataloader_from_args(args.data, state.data_loader_state))
        profiler = stack.enter_context(maybe_run_profiler(args.profiling, args.dump_dir, get_global_rank()))
        gc.collect()
        last_log, tokens_since_log, data_time = time.perf_counter(), 0, 0.0
        while state.step < args.steps:
            state.acc_step = (state.acc_step + 1) % args.grad_acc_steps
            lr = optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            tokens, mask, state.data_loader_state = next(batches)
            if state.step % args.gc_collect_freq == 0 and state.acc_step == 0:
                gc.collect()
            inputs = torch.from_numpy(tokens[..., 0]).to(device, non_blocking=True)
            targets = torch.from_numpy(tokens[..., 1]).to(device, non_blocking=True)
            loss_mask = None if mask[..., 1].all() else torch.from_numpy(np.ascontiguousarray(mask[..., 1])).to(device)
            data_time += time.perf_counter() - start

            if mesh is not None and args.grad_acc_steps > 1:
                model.set_requires_gradient_sync(state.acc_step == 0)
            loss = model(inputs, targets, loss_mask=loss_mask)
            (loss / args.grad_acc_steps).backward()
            loss_value = loss.detach()
            grad_norm = -1.0
            if state.acc_step == 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=args.optim.clip, foreach=True)
                grad_norm = (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
            tokens_since_log += inputs.numel()
            if profiler is not None:
                profiler.step()

            # every rank must agree on stopping, so both flags travel in one reduction
            nonfinite = not math.isfinite(loss_value.item())
            flags = all_reduce_max(2.0 * nonfinite + stop.requested)
            if flags >= 2:
                raise TrainingError(
                    f"loss is {loss_value.item()} at step {state.step}; stopping (the newest checkpoint in "
                    f"{checkpoint.path} is unchanged)"
                )

            if state.step % args.logging.freq == 0 and _log_now(args, state):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed = time.perf_counter() - last_log
                wps = tokens_since_log / elapsed
                metrics = {
                    "global_step": state.step,
                    "acc_step": state.acc_step,
                    "speed/wps": wps,
                    "speed/FLOPS": flops_per_token * wps,
                    "speed/curr_iter_time": time.perf_counter() - start,
                    "speed/data_load_time": data_time,
                    "optim/grad_norm": grad_norm,
                    "optim/lr": lr,
                    "optim/total_tokens": dp_degree
                    * (args.grad_acc_steps * state.step + state.acc_step)
                    * args.data.batch_size
                    * args.data.seq_len,
                    **{f"memory/{k}": v for k, v in memory.stats().items()},
                    "loss/out": all_reduce_mean(loss_value.item()),
                }
                metric_logger.log(metrics)
                logger.info(
                    f"step: {state.step}  acc: {state.acc_step}  loss: {metrics['loss/out']:.4f}  "
                    f"grad: {grad_norm:.2e}  flops: {metrics['speed/FLOPS']:.2e}  wps: {wps:.2e}  "
                    f"iter: {metrics['speed/curr_iter_time']:.4f}  data: {data_time:.4f}  lr: {lr:.2e}  "
                    f"mem: {metrics['memory/max_active_pct']:.0f}%  pow: {metrics['memory/power_draw'] / 1000} W"
                )
                last_log, tokens_since_log, data_time = time.perf_counter(), 0, 0.0

            saved = False
            if state.acc_step == 0 and (
                state.step % args.checkpoint.dump.every == 0 or state.step % args.checkpoint.eval.every == 0
            ):
                checkpoint.save(model, optimizer, state, args, state.step)
                saved = True
            if flags >= 1:
                if not saved:
                    checkpoint.save(model, optimizer, state, args, state.step)
                logger.warning(f"stopped on request at step {state.step}; resume by starting the same command")
                barrier()
                return
    if not saved:
        checkpoint.save(model, optimizer, state, args, state.step)
    gc.collect()
    logger.info(f"training done at step {state.step}; checkpoints in {checkpoint.path}")


def _log_now(args: BaseTrainArgs, state: TrainState) -> bool:
    if state.acc_step == 0:
        return True
    return args.logging.acc_freq is not None and state.acc_step % args.logging.acc_freq == 0


class _NoMetrics:
    """The metric logger of non-zero ranks: they compute metrics (collectives) but do not write them."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def log(self, metrics: dict) -> None:
        pass
