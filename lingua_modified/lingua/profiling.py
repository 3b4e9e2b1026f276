"""An optional profiling window: a torch-profiler trace of steps [profile_warmup, profile_warmup + profile_steps) and,
on CUDA, a memory snapshot of steps [mem_warmup, mem_warmup + mem_steps), written under dump_dir/<trace_folder>."""

import contextlib
import logging
import os
import pickle
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile, schedule

logger = logging.getLogger()


@dataclass
class ProfilerArgs:
    run: bool = False
    trace_folder: str = "profiling"
    mem_warmup: int = 100
    mem_steps: int = 2
    profile_warmup: int = 102
    profile_steps: int = 2


class Profiler:
    """Call `step()` once per training step."""

    def __init__(self, args: ProfilerArgs, folder: str, rank: int):
        self.args, self.folder, self.rank = args, folder, rank
        self.count = 0
        os.makedirs(folder, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.torch_profiler = profile(
            activities=activities,
            schedule=schedule(wait=args.profile_warmup, warmup=0, active=args.profile_steps, repeat=1),
            on_trace_ready=self._save_trace,
            record_shapes=True,
            profile_memory=True,
            with_flops=True,
        )

    def _save_trace(self, prof) -> None:
        path = os.path.join(self.folder, f"profile_{self.count:06d}_rank{self.rank}.pt.trace.json")
        prof.export_chrome_trace(path)
        logger.info(f"profiler trace written to {path}")

    def step(self) -> None:
        self.count += 1
        self.torch_profiler.step()
        if not torch.cuda.is_available():
            return
        if self.count == self.args.mem_warmup:
            torch.cuda.memory._record_memory_history()
        elif self.count == self.args.mem_warmup + self.args.mem_steps:
            path = os.path.join(self.folder, f"memory_snapshot_{self.count:06d}_rank{self.rank}.pickle")
            with open(path, "wb") as f:
                pickle.dump(torch.cuda.memory._snapshot(), f)
            torch.cuda.memory._record_memory_history(enabled=None)
            logger.info(f"memory snapshot written to {path}")


@contextlib.contextmanager
def maybe_run_profiler(args: ProfilerArgs, dump_dir: str, rank: int):
    if not args.run:
        yield None
        return
    profiler = Profiler(args, os.path.join(dump_dir, args.trace_folder), rank)
    with profiler.torch_profiler:
        yield profiler
