"""Training metrics: metrics.jsonl (one JSON object per logged step, appended), optional wandb, memory statistics."""

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

logger = logging.getLogger()


@dataclass
class WandbArgs:
    job_type: str | None = None
    dir: str | None = None
    project: str | None = None
    entity: str | None = None
    tags: list | None = None
    group: str | None = None
    name: str | None = None
    notes: str | None = None
    config_exclude_keys: list[str] | None = None
    config_include_keys: list[str] | None = None
    anonymous: str | None = None
    mode: str | None = None
    allow_val_change: bool | None = None
    resume: bool | str | None = None  # true / false, or one of WANDB_RESUME_MODES
    force: bool | None = None
    tensorboard: bool | None = None
    sync_tensorboard: bool | None = None
    monitor_gym: bool | None = None
    save_code: bool | None = None
    id: str | None = None
    fork_from: str | None = None
    resume_from: str | None = None


WANDB_RESUME_MODES = ("allow", "must", "never", "auto")


def check_wandb_args(args: WandbArgs) -> None:
    if isinstance(args.resume, str) and args.resume not in WANDB_RESUME_MODES:
        raise ValueError(
            f"logging.wandb.resume={args.resume!r}; expected true, false or one of {', '.join(WANDB_RESUME_MODES)}"
        )


@dataclass
class LoggingArgs:
    freq: int = 10  # optimizer steps between metric lines
    acc_freq: int | None = None  # also log inside gradient accumulation every this many micro-batches
    wandb: WandbArgs | None = None


class MetricLogger:
    """Appends metric dicts to a JSONL file (stamped with a timezone-aware `created_at`); mirrors them to wandb when
    configured. wandb is imported only then, so it is never required."""

    def __init__(self, path: str | Path, wandb_args: WandbArgs | None = None, config=None):
        self.path = Path(path)
        self.file = None
        self.wandb = None
        if wandb_args is not None:
            import wandb

            self.wandb = wandb
            wandb.init(
                config=asdict(config) if config is not None else None,
                **{k: v for k, v in asdict(wandb_args).items() if v is not None},
            )

    def __enter__(self):
        self.file = open(self.path, "a")
        return self

    def log(self, metrics: dict) -> None:
        if self.wandb is not None:
            self.wandb.log(metrics, step=metrics["global_step"])
        line = dict(metrics, created_at=datetime.now(timezone.utc).isoformat())
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.wandb is not None:
            self.wandb.finish()
        return False


class MemoryMonitor:
    """Peak memory since the last reset (CUDA; zeros on CPU, where PyTorch keeps no allocator statistics)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.capacity = torch.cuda.get_device_properties(device).total_memory if self.cuda else 0
        if self.cuda:
            logger.info(f"GPU {torch.cuda.get_device_name(device)} with {self.capacity / 2**30:.2f} GiB")
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.empty_cache()

    def stats(self) -> dict:
        if not self.cuda:
            return dict(
                max_active_gib=0.0,
                max_active_pct=0.0,
                max_reserved_gib=0.0,
                max_reserved_pct=0.0,
                num_alloc_retries=0,
                num_ooms=0,
                power_draw=0,
            )
        info = torch.cuda.memory_stats(self.device)
        active, reserved = info.get("active_bytes.all.peak", 0), info.get("reserved_bytes.all.peak", 0)
        try:
            power = torch.cuda.power_draw(self.device)
        except (RuntimeError, ModuleNotFoundError):  # no NVML: power is informative only
            power = 0
        stats = dict(
            max_active_gib=active / 2**30,
            max_active_pct=100 * active / self.capacity,
            max_reserved_gib=reserved / 2**30,
            max_reserved_pct=100 * reserved / self.capacity,
            num_alloc_retries=info.get("num_alloc_retries", 0),
            num_ooms=info.get("num_ooms", 0),
            power_draw=power,
        )
        if stats["num_alloc_retries"] or stats["num_ooms"]:
            logger.warning(f"{stats['num_alloc_retries']} allocation retries, {stats['num_ooms']} OOMs")
        torch.cuda.reset_peak_memory_stats(self.device)
        return stats
