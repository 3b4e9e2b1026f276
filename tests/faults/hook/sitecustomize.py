"""Fault injection for tests/faults: Python imports this file at start-up when its folder is on PYTHONPATH, in every
process of a run (the trainer, each torchrun worker, the data loader's background process).

FAULT=<point>:<n> arms one fault; nothing happens without it. FAULT_TEST_PID is the test process (the
kills stop below it). FAULT_LOG names a file where the fault notes that it
fired (one line "<point> <n> <pid>") just before it acts, so a test can tell an injected fault from a crash.

    kill:<n>      SIGKILL the whole process group during optimizer step n (before its update)
    save:<n>      SIGKILL the group inside the n-th checkpoint save, after its model and optimizer files are written
    prefetch:<n>  SIGKILL the group from the data loader's background process as it makes its n-th batch
    unlink:<n>    the data loader's background process deletes the file FAULT_FILE as it makes its n-th batch
    evalkill:<n>  SIGKILL the group inside the n-th in-training evaluation, once it has loaded the checkpoint
    term:<n>      send SIGTERM to this process during step n (every rank does, as a cluster preempting a job)
    usr2:<n>      the same with SIGUSR2
    nan:<n>       the n-th loss computed is NaN
    fill:<n>      the n-th checkpoint save finds its disk filled up (a file takes all the free space but 64 KiB)

The patches are applied right after the module they change is imported, before anything binds the patched name.
"""

import importlib.abc
import importlib.machinery
import multiprocessing
import os
import signal
import sys

POINT, _, COUNT = os.environ.get("FAULT", "").partition(":")
COUNT = int(COUNT or 0)
calls = {}


def fire(point: str) -> bool:
    """Count one call at `point`; True (after noting it in FAULT_LOG) exactly at the armed call."""
    calls[point] = calls.get(point, 0) + 1
    if point != POINT or calls[point] != COUNT:
        return False
    with open(os.environ["FAULT_LOG"], "a") as log:
        log.write(f"{POINT} {COUNT} {os.getpid()}\n")
    return True


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


def kill_group() -> None:
    """SIGKILL every process of the run: the process groups of this process and of its ancestors up to the test
    (FAULT_TEST_PID), since torchrun starts each worker in a group of its own; this process's group last."""
    own, groups, pid = os.getpgid(0), [], os.getppid()
    while pid > 1 and pid != int(os.environ["FAULT_TEST_PID"]):
        groups.append(os.getpgid(pid))
        pid = parent_of(pid)
    for group in dict.fromkeys(groups):
        if group != own:
            os.killpg(group, signal.SIGKILL)
    os.killpg(own, signal.SIGKILL)


def patch_optim(module) -> None:
    build = module.build_optimizer

    def build_optimizer(*args, **kwargs):
        optimizer, scheduler = build(*args, **kwargs)

        def before_step(optimizer, args, kwargs):
            if fire(POINT):
                if POINT == "kill":
                    kill_group()
                os.kill(os.getpid(), signal.SIGTERM if POINT == "term" else signal.SIGUSR2)

        optimizer.register_step_pre_hook(before_step)
        return optimizer, scheduler

    module.build_optimizer = build_optimizer


def patch_checkpoint(module) -> None:
    save = module.dcp.save

    def dcp_save(*args, **kwargs):
        if POINT == "fill" and fire("fill"):
            folder = os.path.dirname(kwargs["checkpoint_id"])
            with open(os.path.join(folder, "filler"), "wb") as filler:
                filler.write(b"\0" * max(0, os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize - 65536))
        result = save(*args, **kwargs)
        if POINT == "save" and fire("save"):
            kill_group()
        return result

    module.dcp.save = dcp_save


def patch_transformer(module) -> None:
    cross_entropy = module.cross_entropy

    def nan_at_n(*args, **kwargs):
        loss = cross_entropy(*args, **kwargs)
        return loss * float("nan") if fire("nan") else loss

    module.cross_entropy = nan_at_n


def patch_data(module) -> None:
    next_batch = module.BatchStream.__next__

    def counted(self):
        # only in the background loader (the forkserver may import this module before forking it)
        if multiprocessing.parent_process() is not None and fire(POINT):
            if POINT == "unlink":
                os.unlink(os.environ["FAULT_FILE"])
            else:
                kill_group()
        return next_batch(self)

    module.BatchStream.__next__ = counted


def patch_training(module) -> None:
    evaluate = module.evaluate_checkpoint

    def evaluate_checkpoint(args, spec, step, ckpt_dir):
        if args.eval is None or args.async_eval_gpus is not None:
            return evaluate(args, spec, step, ckpt_dir)
        eval_module = module.eval_module(spec)

        load = eval_module.load_consolidated_model_and_tokenizer

        def dying_load(*args, **kwargs):
            # inside the evaluation: the checkpoint consolidated and loaded, no result written yet
            loaded = load(*args, **kwargs)
            if fire("evalkill"):
                kill_group()
            return loaded

        eval_module.load_consolidated_model_and_tokenizer = dying_load
        try:
            return evaluate(args, spec, step, ckpt_dir)
        finally:
            eval_module.load_consolidated_model_and_tokenizer = load

    module.evaluate_checkpoint = evaluate_checkpoint


PATCHES = {
    "kill": {"lingua.optim": patch_optim},
    "term": {"lingua.optim": patch_optim},
    "usr2": {"lingua.optim": patch_optim},
    "save": {"lingua.checkpoint": patch_checkpoint},
    "fill": {"lingua.checkpoint": patch_checkpoint},
    "nan": {"lingua.transformer": patch_transformer},
    "prefetch": {"lingua.data": patch_data},
    "unlink": {"lingua.data": patch_data},
    "evalkill": {"lingua.training": patch_training},
}.get(POINT, {})


class PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_module
        return spec


if POINT:
    if POINT not in {"kill", "save", "prefetch", "unlink", "evalkill", "term", "usr2", "nan", "fill"} or COUNT < 1:
        raise SystemExit(f"FAULT={os.environ['FAULT']!r}; expected <point>:<n> with a point listed in {__file__}")
    sys.meta_path.insert(0, PatchAfterImport())
