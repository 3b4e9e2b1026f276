"""The training loop shared by every app (apps/main for Llama/LlamaCanon, apps/gla for the linear models).

An app supplies its TrainArgs (the common fields below plus its own `model` dataclass) and a ModelSpec saying how
to build the model and how to parallelise it; everything else (data, optimisation, checkpoints, metrics,
preemption) lives here once.
"""

import enum
import gc
import importlib
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .args import ConfigError, dataclass_from_dict, dataclass_to_dict, dump_config, merge_sources, parse_args
from .checkpoint import CheckpointArgs, CheckpointError, CheckpointManager, step_folder_name
from .data import DataArgs, build_dataloader_from_args, init_dataloader_state_from_args
from .distributed import (
    DistributedArgs,
    EnvironmentArgs,
    all_reduce_max,
    all_reduce_mean,
    barrier,
    check_spawn_method,
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
from .metrics import LoggingArgs, MemoryMonitor, MetricLogger, check_wandb_args
from .optim import OptimArgs, build_optimizer
from .profiling import ProfilerArgs, maybe_run_profiler
from .stool import StoolError, eval_job_shape, launch_eval_job, requeue_slurm_job
from .tokenizer import build_tokenizer

logger = logging.getLogger()


@dataclass
class BaseTrainArgs:
    """The fields every app's TrainArgs has, in the order config.yaml lists them; apps redefine `model`."""

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
    """How an app builds, parallelises, generates with and evaluates its model."""

    build: Callable[[Any], nn.Module]  # model args -> module (called on the meta device)
    model_args: type  # the dataclass of the `model:` section (a checkpoint's params.json is read into it)
    fsdp_grouping_plan: Callable[[Any], list[tuple[str, bool]]]
    # generation: (model, pad [B] left-padding slots of each row, max_len) -> the object the model's forward takes
    # as `cache=` and extends with every call (keys/values, recurrent and Canon states)
    generation_cache: Callable[[nn.Module, torch.Tensor, int], Any]
    no_recompute_ops: set = field(default_factory=set)
    flops_per_token: Callable[[int, Any, int], float] = lambda n_params, model_args, seq_len: 6.0 * n_params
    # the app's eval module, also its CLI (`python -m <eval_module> config=...`): it defines EvalArgs,
    # check_eval_args(cfg) (raises one clear error, needs no model) and launch_eval(cfg); imported only when `eval`
    # is set, so lm-eval stays an optional dependency of training
    eval_module: str | None = None
    # extra SLURM options of a submitted eval job (StoolArgs fields such as account, qos, exclude) from the train
    # args; empty values keep the training job's own
    eval_job_options: Callable[[Any], dict] = lambda args: {}


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
    if args.async_eval_gpus is not None:
        eval_job_shape(args.async_eval_gpus)
        if args.eval is not None and shutil.which("sbatch") is None:
            raise ValueError("async_eval_gpus is set but sbatch is not on PATH; expected a SLURM cluster (or null)")
    args.model.max_seqlen = args.data.seq_len
    if getattr(args.model, "bos_id", 0) < 0 and tokenizer.bos_id is not None:
        args.model.bos_id = tokenizer.bos_id
    check_spawn_method(args.distributed)
    if args.logging.wandb is not None:
        check_wandb_args(args.logging.wandb)
        if args.logging.wandb.name is None:  # the run's name unless wandb's own is given
            args.logging.wandb.name = args.name


class StopDecision(enum.IntEnum):
    """What every rank does after a step. The ranks agree on the highest value any of them wants."""

    CONTINUE = 0
    CHECKPOINT_AND_EXIT = 1  # a stop request: save, then exit; starting the same command resumes
    CHECKPOINT_AND_REQUEUE = 2  # a stop request inside a SLURM job: save, then requeue the job, which resumes
    ABORT = 3  # a non-finite loss: stop with an error, saving nothing (the newest checkpoint stays as it was)


class StopRequest:
    """SIGUSR2 (SLURM's warning before the time limit) and SIGTERM set `requested`; the run checkpoints and exits at
    the end of the current step. After SIGUSR2 inside a SLURM job the job is also requeued; SIGTERM (scancel, or SLURM
    preempting the job itself) only stops, since requeueing would undo a cancel."""

    def __init__(self):
        self.requested = StopDecision.CONTINUE
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        requeue = signum == signal.SIGUSR2 and is_slurm_job()
        wanted = StopDecision.CHECKPOINT_AND_REQUEUE if requeue else StopDecision.CHECKPOINT_AND_EXIT
        if wanted > self.requested:  # not the SIGTERM with which SLURM ends a job that was just requeued
            logger.warning(f"received signal {signal.Signals(signum).name}: checkpointing at the end of this step")
            self.requested = wanted


def check_model_values(model: nn.Module) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if local.numel() and not torch.isfinite(local).all():
            logger.warning(f"{name} has non-finite values after initialisation")


def eval_module(spec: ModelSpec):
    if spec.eval_module is None:
        raise ValueError("eval is set but this app has no evaluation; expected eval: null")
    try:
        return importlib.import_module(spec.eval_module)
    except ModuleNotFoundError as error:
        raise ValueError(f"eval is set but {error.name} is not installed (pip install -e '.[eval]')") from None


def eval_args_for_step(args: BaseTrainArgs, spec: ModelSpec, step: int, ckpt_dir) -> Any:
    """The app's EvalArgs for the checkpoint of `step` in `ckpt_dir`: the `eval` map (strictly parsed), with the
    step, the checkpoint, dump_dir <dump_dir>/evals/<step> and metric_log_dir <dump_dir> filled in."""
    where = dict(
        global_step=step,
        ckpt_dir=str(ckpt_dir),
        dump_dir=os.path.join(args.dump_dir, "evals", step_folder_name(step)),
        metric_log_dir=args.dump_dir,
    )
    return dataclass_from_dict(eval_module(spec).EvalArgs, merge_sources(args.eval, where))


def evaluate_checkpoint(args: BaseTrainArgs, spec: ModelSpec, step: int, ckpt_dir) -> None:
    """Evaluate the checkpoint just saved at `step` in this process when `eval` is set and no separate eval job is
    configured. Every rank takes part (lm-eval shares the requests among them); training's RNG states are kept."""
    if args.eval is None:
        return
    if args.async_eval_gpus is not None:
        if get_is_master():
            submit_eval_job(args, spec, step, ckpt_dir)
        return
    eval_args = eval_args_for_step(args, spec, step, ckpt_dir)
    state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        eval_module(spec).launch_eval(eval_args)
    random.setstate(state[0])
    np.random.set_state(state[1])
    gc.collect()


def evaluated(args: BaseTrainArgs, step: int) -> bool:
    """Whether the in-training evaluation of `step` finished: it appends a line for the step to metrics.eval.jsonl or
    metrics.validation.jsonl as its last act. Without `eval` there is nothing to do; a submitted eval job counts as
    done (submit_eval_job skips a step whose eval folder exists)."""
    if args.eval is None or args.async_eval_gpus is not None:
        return args.eval is None
    for name in ("metrics.eval.jsonl", "metrics.validation.jsonl"):
        path = os.path.join(args.dump_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                if any(json.loads(line).get("global_step") == step for line in f if line.strip()):
                    return True
    return False


def submit_eval_job(args: BaseTrainArgs, spec: ModelSpec, step: int, ckpt_dir) -> None:
    """Submit the evaluation of the checkpoint of `step` as its own SLURM job on `async_eval_gpus` GPUs (0: CPU); the
    job appends its line to metrics.eval.jsonl itself. A failed submission is logged and training goes on."""
    eval_args = eval_args_for_step(args, spec, step, ckpt_dir)
    if os.path.exists(eval_args.dump_dir):  # a resumed run saving the same step again
        logger.info(f"{eval_args.dump_dir} exists: the evaluation of step {step} was submitted before")
        return
    try:
        job_id = launch_eval_job(
            dataclass_to_dict(eval_args), args.async_eval_gpus, spec.eval_module, **spec.eval_job_options(args)
        )
    except (ConfigError, StoolError, OSError) as error:
        logger.error(f"could not submit the evaluation of step {step}: {error}")
        return
    logger.info(f"submitted SLURM job {job_id} to evaluate step {step}; results in {eval_args.dump_dir}")


def train(args: BaseTrainArgs, spec: ModelSpec) -> None:
    tokenizer = build_tokenizer(args.data.tokenizer)
    validate_train_args(args, tokenizer, get_world_size())
    if args.eval is not None:  # a bad eval config (key, task name) fails now, not at the first evaluation
        eval_module(spec).check_eval_args(eval_args_for_step(args, spec, 0, ""))
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
        TrainingRun(args, spec, device, stop).train()
    finally:
        clean_up()


def main(train_args_class: type[BaseTrainArgs], spec: ModelSpec, argv=None) -> int:
    """An app's command line: `config=<yaml> [key.sub=value ...]` parsed strictly into `train_args_class`, then
    train. Bad input is one line on stderr and exit status 1."""
    try:
        train(parse_args(train_args_class, argv), spec)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, TrainingError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def build_model(args: BaseTrainArgs, spec: ModelSpec, mesh, device: torch.device) -> tuple[nn.Module, int]:
    """The app's model, parallelised over `mesh` and initialised on `device` from model.seed; and its parameter
    count. Built on the meta device first, so no rank ever holds the whole unsharded model."""
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
    return model, n_params


@dataclass
class StepStats:
    """What one micro-batch step leaves for the metrics line."""

    loss: torch.Tensor  # detached, on the device
    grad_norm: float  # -1 inside gradient accumulation (no optimizer step)
    lr: float  # the learning rate the step used
    started: float  # perf_counter() when the step began


class TrainingRun:
    """One process's part of a training run: `train()` resumes from the newest checkpoint, then repeats
    `train_step`, `agree_on_stop`, `log_metrics` and `checkpoint_and_eval` until the last step or an agreed stop."""

    def __init__(self, args: BaseTrainArgs, spec: ModelSpec, device: torch.device, stop: StopRequest):
        self.args, self.spec, self.device, self.stop = args, spec, device, stop
        self.mesh = get_device_mesh(args.distributed)
        self.dp_rank, self.dp_degree = dp_coordinates(self.mesh)
        self.model, n_params = build_model(args, spec, self.mesh, device)
        self.flops_per_token = spec.flops_per_token(n_params, args.model, args.data.seq_len)
        self.memory = MemoryMonitor(device)
        self.optimizer, scheduler = build_optimizer(self.model, args.optim, args.steps)
        data_state = init_dataloader_state_from_args(args.data, self.dp_rank, self.dp_degree)
        self.state = TrainState(0, 0, scheduler, data_state)
        self.checkpoint = CheckpointManager(args.checkpoint, args.dump_dir, self.dp_rank)
        self.start_step = 0
        self.saved = False  # whether this step's checkpoint is written (a resumed run with no step left saves again)
        self.metric_logger = None
        # the steps since the last metrics line: when it was written, tokens seen, time spent waiting for data
        self.last_log, self.tokens_since_log, self.data_time = 0.0, 0, 0.0

    def resume(self) -> None:
        """Load the newest checkpoint, if any, and evaluate it when the run stopped before its evaluation ended."""
        args, state = self.args, self.state
        resumed = self.checkpoint.load(self.model, self.optimizer, state)
        self.start_step = state.step
        on_eval_grid = state.step % args.checkpoint.eval.every == 0 or state.step == args.steps
        if resumed is not None and on_eval_grid and not evaluated(args, state.step):
            # the run stopped while evaluating this checkpoint (or before submitting its evaluation job)
            logger.warning(f"step {state.step} has no evaluation results; evaluating {resumed} now")
            evaluate_checkpoint(args, self.spec, state.step, resumed)

    def train(self) -> None:
        self.resume()
        gc.disable()
        self.model.train()
        with ExitStack() as stack:
            batches, profiler = self.open_streams(stack)
            gc.collect()
            self.last_log = time.perf_counter()
            while self.state.step < self.args.steps:
                stats = self.train_step(batches)
                if profiler is not None:
                    profiler.step()
                decision = self.agree_on_stop(stats.loss)
                if decision == StopDecision.ABORT:
                    raise TrainingError(
                        f"loss is {stats.loss.item()} at step {self.state.step}; stopping (the newest checkpoint in "
                        f"{self.checkpoint.path} is unchanged)"
                    )
                if self.state.step % self.args.logging.freq == 0 and _log_now(self.args, self.state):
                    self.log_metrics(stats)
                self.checkpoint_and_eval(decision)
                if decision != StopDecision.CONTINUE:
                    self.exit_on_request(decision)
                    return
        self.finish()

    def open_streams(self, stack: ExitStack):
        """Enter the metric logger (rank 0 writes; the others only take part in the reductions), the data loader and
        the profiler on `stack`; returns (batches, profiler or None)."""
        args = self.args
        self.metric_logger = stack.enter_context(
            MetricLogger(os.path.join(args.dump_dir, "metrics.jsonl"), args.logging.wandb, args)
            if get_is_master()
            else _NoMetrics()
        )
        loader = build_dataloader_from_args(args.data, self.state.data_loader_state, args.distributed.spawn_method)
        batches = stack.enter_context(loader)
        profiler = stack.enter_context(maybe_run_profiler(args.profiling, args.dump_dir, get_global_rank()))
        return batches, profiler

    def train_step(self, batches) -> StepStats:
        """One micro-batch: forward and backward; at the end of gradient accumulation, clip the gradients and step
        the optimizer and the schedule."""
        args, state, device = self.args, self.state, self.device
        state.acc_step = (state.acc_step + 1) % args.grad_acc_steps
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        tokens, mask, state.data_loader_state = next(batches)
        if state.step % args.gc_collect_freq == 0 and state.acc_step == 0:
            gc.collect()
        inputs = torch.from_numpy(tokens[..., 0]).to(device, non_blocking=True)
        targets = torch.from_numpy(tokens[..., 1]).to(device, non_blocking=True)
        loss_mask = None if mask[..., 1].all() else torch.from_numpy(np.ascontiguousarray(mask[..., 1])).to(device)
        self.data_time += time.perf_counter() - start

        if self.mesh is not None and args.grad_acc_steps > 1:
            self.model.set_requires_gradient_sync(state.acc_step == 0)
        loss = self.model(inputs, targets, loss_mask=loss_mask)
        (loss / args.grad_acc_steps).backward()
        grad_norm = -1.0
        if state.acc_step == 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=args.optim.clip, foreach=True)
            grad_norm = (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()
            self.optimizer.step()
            state.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
        self.tokens_since_log += inputs.numel()
        return StepStats(loss.detach(), grad_norm, lr, start)

    def agree_on_stop(self, loss_value: torch.Tensor) -> StopDecision:
        """This rank's wish (ABORT on a non-finite loss, else what the signals requested), raised to the highest
        wish of any rank in one reduction, so that every rank decides the same."""
        nonfinite = not math.isfinite(loss_value.item())
        wanted = StopDecision.ABORT if nonfinite else self.stop.requested
        return StopDecision(int(all_reduce_max(float(wanted))))

    def log_metrics(self, stats: StepStats) -> None:
        """One metrics.jsonl line (and W&B, when set) and one log line for the steps since the last one."""
        args, state = self.args, self.state
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wps = self.tokens_since_log / (time.perf_counter() - self.last_log)
        tokens_seen = self.dp_degree * (args.grad_acc_steps * state.step + state.acc_step) * args.data.batch_size
        metrics = {
            "global_step": state.step,
            "acc_step": state.acc_step,
            "speed/wps": wps,
            "speed/FLOPS": self.flops_per_token * wps,
            "speed/curr_iter_time": time.perf_counter() - stats.started,
            "speed/data_load_time": self.data_time,
            "optim/grad_norm": stats.grad_norm,
            "optim/lr": stats.lr,
            "optim/total_tokens": tokens_seen * args.data.seq_len,
            **{f"memory/{k}": v for k, v in self.memory.stats().items()},
            "loss/out": all_reduce_mean(stats.loss.item()),
        }
        self.metric_logger.log(metrics)
        logger.info(
            f"step: {state.step}  acc: {state.acc_step}  loss: {metrics['loss/out']:.4f}  "
            f"grad: {stats.grad_norm:.2e}  flops: {metrics['speed/FLOPS']:.2e}  wps: {wps:.2e}  "
            f"iter: {metrics['speed/curr_iter_time']:.4f}  data: {self.data_time:.4f}  lr: {stats.lr:.2e}  "
            f"mem: {metrics['memory/max_active_pct']:.0f}%  pow: {metrics['memory/power_draw'] / 1000} W"
        )
        self.last_log, self.tokens_since_log, self.data_time = time.perf_counter(), 0, 0.0

    def checkpoint_and_eval(self, decision: StopDecision) -> None:
        """Save at the end of an optimizer step on the dump or eval grid, and evaluate an eval-grid save unless the
        run is stopping; when the ranks agreed to stop, save this step whatever the grid."""
        args, state = self.args, self.state
        self.saved = False
        on_grid = state.step % args.checkpoint.dump.every == 0 or state.step % args.checkpoint.eval.every == 0
        if state.acc_step == 0 and on_grid:
            folder = self.checkpoint.save(self.model, self.optimizer, state, args, state.step)
            self.saved = True
            if state.step % args.checkpoint.eval.every == 0 and decision == StopDecision.CONTINUE:
                evaluate_checkpoint(args, self.spec, state.step, folder)
        if decision != StopDecision.CONTINUE and not self.saved:
            self.checkpoint.save(self.model, self.optimizer, state, args, state.step)
            self.saved = True

    def exit_on_request(self, decision: StopDecision) -> None:
        """After the stop's checkpoint: wait for every rank, then requeue the SLURM job or just say how to resume."""
        barrier()
        if decision == StopDecision.CHECKPOINT_AND_REQUEUE:
            if get_is_master():
                requeue_slurm_job()  # SLURM ends every task now and restarts the job, which resumes here
            return
        logger.warning(f"stopped on request at step {self.state.step}; resume by starting the same command")

    def finish(self) -> None:
        """Save the last step unless its save is done, and evaluate it when it is off the eval grid."""
        args, state = self.args, self.state
        if not self.saved:
            self.checkpoint.save(self.model, self.optimizer, state, args, state.step)
        if state.step > self.start_step and state.step % args.checkpoint.eval.every:
            evaluate_checkpoint(args, self.spec, state.step, self.checkpoint.path / step_folder_name(state.step))
        gc.collect()
        logger.info(f"training done at step {state.step}; checkpoints in {self.checkpoint.path}")


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
