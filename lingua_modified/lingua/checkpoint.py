"""Checkpoints: dump_dir/checkpoints/<10-digit step>/ holding torch.distributed.checkpoint files for the model and the
optimizer, params.json (the full config) and train_state_<dp rank>.json (step, data loader state, scheduler).

Saves are atomic: every rank writes into a hidden temporary folder and rank 0 renames it to its step name only once
all ranks are done, so a run killed during a save leaves its newest complete checkpoint untouched and resumes from it.
A save that does not fit on the disk is refused before writing (or, when the disk fills up during it, its partial
files are removed) with one error naming the folder and the space; earlier checkpoints are never touched.

Resuming checks every candidate newest first: a folder whose .metadata is missing or unreadable, whose DCP files are
missing or shorter than the metadata says, or whose train_state does not parse is skipped with the reason, and moved
aside to `corrupted-<step>` (kept for inspection, out of the way of the step's next save).
"""

import errno
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from .args import dataclass_to_dict
from .atomic import publish_folder, write_atomic
from .distributed import all_reduce_max, all_reduce_sum, barrier, get_is_master

logger = logging.getLogger()

STEP_FOLDER = re.compile(r"^\d{10}$")
CONSOLIDATE_FOLDER = "consolidated"
CONSOLIDATE_NAME = "consolidated.pth"
CONFIG_NAME = "params.json"
TRAIN_STATE_NAME = "train_state_{:05d}.json"
MB = 2**20


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; the earlier checkpoints are intact."""


@dataclass
class SaveEvery:
    every: int = 1000
    keep: int = 0  # <= 0 keeps every checkpoint of this kind


@dataclass
class CheckpointArgs:
    dump: SaveEvery = field(default_factory=SaveEvery)
    eval: SaveEvery = field(default_factory=SaveEvery)
    path: str | None = None  # default: <dump_dir>/checkpoints
    init_ckpt_path: str | None = None  # model-only warm start from a DCP folder
    continue_training_from_init: bool = False  # accepted for recipe compatibility; has no effect


def step_folder_name(step: int) -> str:
    return f"{step:010d}"


def list_checkpoints(path: str | Path) -> list[Path]:
    """Complete checkpoint folders under `path`, oldest first (temporary folders of interrupted saves are skipped)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and STEP_FOLDER.match(p.name))


def folders_to_delete(steps: list[int], dump: SaveEvery, eval_: SaveEvery) -> list[int]:
    """The keep policy: the newest `keep` dump-grid and eval-grid checkpoints survive (keep <= 0: all); checkpoints
    off both grids (preemption or final saves) are never deleted."""
    dumps = [s for s in steps if dump.every > 0 and s % dump.every == 0]
    evals = [s for s in steps if eval_.every > 0 and s % eval_.every == 0]
    others = set(steps) - set(dumps) - set(evals)
    kept = set(others)
    kept |= set(dumps[-dump.keep :] if dump.keep > 0 else dumps)
    kept |= set(evals[-eval_.keep :] if eval_.keep > 0 else evals)
    return [s for s in steps if s not in kept]


class CheckpointManager:
    def __init__(self, args: CheckpointArgs, dump_dir: str, dp_rank: int):
        self.args = args
        self.path = Path(args.path or os.path.join(dump_dir, "checkpoints"))
        self.dp_rank = dp_rank
        if get_is_master():
            self.path.mkdir(parents=True, exist_ok=True)
            for leftover in self.path.glob(".partial-*"):  # an interrupted save of an earlier run
                shutil.rmtree(leftover, ignore_errors=True)
        barrier()

    def newest(self) -> Path | None:
        """The newest checkpoint every rank can resume from. Newer ones that are incomplete or damaged are skipped
        (all ranks agree on each verdict), logged with the reason and moved aside by rank 0."""
        for folder in reversed(list_checkpoints(self.path)):
            problem = checkpoint_problem(folder, self.dp_rank)
            if not all_reduce_max(float(problem is not None)):
                return folder
            aside = self.path / f"corrupted-{folder.name}"
            if get_is_master():
                for n in range(1, 1000):
                    if not aside.exists():
                        break
                    aside = self.path / f"corrupted-{folder.name}.{n}"
                os.replace(folder, aside)
            logger.warning(
                f"skipped checkpoint {folder}: {problem or 'damaged on another rank'}; moved it to {aside.name}"
            )
            barrier()
        return None

    def save(self, model, optimizer, train_state, config, step: int) -> Path:
        final = self.path / step_folder_name(step)
        if final.exists():  # this exact step is already saved (a resumed run ending where it started)
            return final
        temp = self.path / f".partial-{step_folder_name(step)}"
        if get_is_master():
            shutil.rmtree(temp, ignore_errors=True)
            temp.mkdir()
        barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        needed = all_reduce_sum([tensor_bytes(model_sd) + tensor_bytes(optim_sd)])[0]
        free = shutil.disk_usage(self.path).free
        space = f"{self.path} has {free / MB:.1f} MB free and a checkpoint needs about {needed / MB:.1f} MB"
        if all_reduce_max(float(needed > free)):
            self._discard(temp)
            raise CheckpointError(f"not enough space to save checkpoint {final}: {space}")
        error = None
        try:
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(temp))
            write_atomic(str(temp / TRAIN_STATE_NAME.format(self.dp_rank)), json.dumps(train_state.state_dict()))
            if get_is_master():
                write_atomic(str(temp / CONFIG_NAME), json.dumps(dataclass_to_dict(config), indent=2))
        except (Exception, dcp.CheckpointException) as exception:  # DCP's is a BaseException, wrapping the cause
            error = exception
        if all_reduce_max(float(error is not None)):
            self._discard(temp)
            if error is not None and not is_disk_full(error):
                raise error  # a bug, not the disk: keep its traceback
            reason = "the disk is full" if error is not None else "it failed on another rank"
            raise CheckpointError(
                f"could not save checkpoint {final} ({reason}); before the save {space}; the partial files were "
                "removed and the earlier checkpoints are intact"
            ) from None
        if get_is_master():
            publish_folder(temp, final)
            self._clean_up()
            logger.info(f"saved checkpoint {final}")
        barrier()
        return final

    def _discard(self, temp: Path) -> None:
        barrier()
        if get_is_master():
            shutil.rmtree(temp, ignore_errors=True)
        barrier()

    def _clean_up(self) -> None:
        steps = [int(p.name) for p in list_checkpoints(self.path)]
        for step in folders_to_delete(steps, self.args.dump, self.args.eval):
            shutil.rmtree(self.path / step_folder_name(step))
            logger.info(f"removed old checkpoint {step_folder_name(step)}")

    def load(self, model, optimizer, train_state) -> Path | None:
        """Resume from the newest checkpoint if there is one (model, optimizer, train state); else keep the
        initialisation or load `init_ckpt_path` model weights."""
        folder = self.newest()
        if folder is not None:
            with open(folder / TRAIN_STATE_NAME.format(self.dp_rank)) as f:
                train_state.load_state_dict(json.load(f))
            load_model_and_optimizer(model, optimizer, folder)
            logger.info(f"resumed from {folder} at step {train_state.step}")
            return folder
        if self.args.init_ckpt_path:
            init = Path(self.args.init_ckpt_path)
            if not (init / ".metadata").exists():
                raise FileNotFoundError(
                    f"checkpoint.init_ckpt_path {init} is not a DCP checkpoint folder (no .metadata)"
                )
            load_model_and_optimizer(model, None, init)
            logger.info(f"initialised the model from {init}")
        return None


def checkpoint_problem(folder: Path, dp_rank: int) -> str | None:
    """Why `folder` cannot be resumed by data-parallel rank `dp_rank`, or None when it is complete: its .metadata
    loads, every file it points at is at least as long as the data it locates there, and the rank's train state
    parses."""
    if not (folder / ".metadata").is_file():
        return "no .metadata file"
    try:
        metadata = dcp.FileSystemReader(str(folder)).read_metadata()
    except Exception as error:  # unpickling damaged bytes raises anything
        return f"its .metadata does not load ({first_line(error)})"
    ends = {}
    for item in metadata.storage_data.values():
        ends[item.relative_path] = max(ends.get(item.relative_path, 0), item.offset + item.length)
    for name, end in sorted(ends.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size < end:
            return f"{name} is truncated ({path.stat().st_size} bytes, the metadata locates data up to byte {end})"
    name = TRAIN_STATE_NAME.format(dp_rank)
    try:
        state = json.loads((folder / name).read_text())
    except FileNotFoundError:
        return f"no {name}"
    except (OSError, UnicodeError, json.JSONDecodeError) as error:
        return f"{name} does not parse ({first_line(error)})"
    if not isinstance(state, dict) or not {"step", "acc_step", "data_loader_state", "scheduler"} <= set(state):
        return f"{name} is not a train state (expected step, acc_step, data_loader_state and scheduler)"
    return None


def tensor_bytes(state) -> int:
    """Bytes of the tensors (this rank's shards) in a nested state dict."""
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(tensor_bytes(v) for v in state)
    if isinstance(state, torch.Tensor):
        local = state.to_local() if hasattr(state, "to_local") else state
        return local.numel() * local.element_size()
    return 0


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error` (or one it was raised from) is the file system running out of space. torch's file writer
    reports it as a RuntimeError about an unexpected position, without errno."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(error) or "unexpected pos" in str(error):
            return True
        if isinstance(error, dcp.CheckpointException):  # one (exception, traceback) per failed rank
            return any(is_disk_full(failure[0]) for failure in error.failures.values())
        error = error.__cause__ or error.__context__
    return False


def first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error is not None and str(error).strip() else ""


def load_model_and_optimizer(model, optimizer, folder: Path) -> None:
    if optimizer is None:
        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(folder))
        set_model_state_dict(model, state["model"])
        return
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def consolidate_checkpoint(folder: str | Path) -> Path:
    """Write folder/consolidated/consolidated.pth ({"model": full state dict}) and a copy of params.json, once.
    Run in one process. Returns the consolidated folder."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = Path(folder)
    if not (folder / ".metadata").exists():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no .metadata)")
    target = folder / CONSOLIDATE_FOLDER
    if (target / CONSOLIDATE_NAME).exists():
        return target
    with tempfile.TemporaryDirectory(dir=folder, prefix=".partial-") as temp:
        full = os.path.join(temp, "full.pth")
        dcp_to_torch_save(str(folder), full)
        state = torch.load(full, map_location="cpu", weights_only=False)
        staged = Path(temp) / CONSOLIDATE_FOLDER
        staged.mkdir()
        torch.save({"model": state["model"]}, staged / CONSOLIDATE_NAME)
        shutil.copy(folder / CONFIG_NAME, staged / CONFIG_NAME)
        publish_folder(staged, target)
    return target


def main(argv=None) -> int:
    """`python -m lingua.checkpoint consolidate <checkpoint folder>`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lingua.checkpoint")
    commands = parser.add_subparsers(dest="command", required=True)
    consolidate = commands.add_parser("consolidate", help="write <folder>/consolidated/consolidated.pth")
    consolidate.add_argument("folder")
    args = parser.parse_args(argv)
    try:
        target = consolidate_checkpoint(args.folder)
    except FileNotFoundError as error:
        parser.exit(1, f"error: {error}\n")
    print(f"consolidated checkpoint in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
