"""AdamW and the learning-rate schedules of the Lingua trainer.

A schedule is a factor f(t) of the peak lr, where t is the number of optimizer steps already taken (LambdaLR's
convention): the update number t uses lr * f(t). With warmup w > 0, f(t) = t / w for t < w, so the first update
uses lr 0.
"""

import math
from dataclasses import dataclass
from functools import partial

from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

SCHEDULERS = ("constant", "linear", "inv_sqrt", "cosine", "wsd")


@dataclass
class OptimArgs:
    lr: float = 3e-4
    weight_decay: float = 0.1
    epsilon: float = 1e-8
    beta1: float = 0.9
    beta2: float = 0.95
    clip: float = 1.0  # max global grad norm (applied by the trainer)
    scheduler: str = "cosine"  # constant | linear | inv_sqrt | cosine | wsd
    warmup: int = 2000
    lr_min_ratio: float = 0.1
    cycle_length: float = 1.0  # cosine / wsd: cycle length as a fraction of the run
    cosine_theta: float = 1.0  # cosine: progress is raised to this power
    annealing_step: int = 1000  # accepted for config compatibility; unused
    decay_fraction: float = 0.1  # wsd: fraction of each cycle spent decaying
    exp_factor: float = 0.5  # inv_sqrt: exponent of (warmup / step)


def lr_constant(step):
    return 1.0


def lr_linear(step, warmup, n_steps, min_ratio):
    if step < warmup:
        return step / warmup
    if step <= n_steps:
        s = (step - warmup) / max(n_steps - warmup, 1)
        return (1 - s) + s * min_ratio
    return min_ratio


def lr_inv_sqrt(step, warmup, exp_factor, min_ratio):
    if step < warmup:
        return step / warmup
    if step == 0:  # warmup 0: (warmup / step) would be 0 / 0; the schedule starts at its peak
        return 1.0
    return max((warmup / step) ** exp_factor, min_ratio)


def lr_cosine(step, warmup, n_steps, cycle_length, theta, min_ratio):
    """Cosine from 1 to min_ratio over [warmup, n_steps]; with cycle_length < 1, cycles alternate down and up."""
    sign = 1 if (step // (n_steps * cycle_length)) % 2 == 0 else -1
    if step < warmup:
        return step / warmup
    if step <= n_steps:
        s = (step - warmup) / max(n_steps - warmup, 1)
        return min_ratio + 0.5 * (1 - min_ratio) * (sign * math.cos(math.pi * s**theta / cycle_length) + 1)
    return min_ratio


def lr_wsd(step, warmup, n_steps, decay_fraction, cycle_length, min_ratio):
    """Warmup, stable at 1, then the last decay_fraction of each cycle decays from 1 to min_ratio with 1/f
    interpolated linearly (f = 1 / (p / m + 1 - p), written as m / (p + m (1 - p)) so that m = 0 is defined:
    the first form divides by zero there; the limit is 0 throughout the decay)."""
    cycle = int(n_steps * cycle_length)
    end = n_steps if step == n_steps else cycle * (step // cycle + 1)
    decay = int(end * decay_fraction)
    if step < warmup:
        return step / warmup
    if step <= end - decay:
        return 1.0
    if step <= end:
        p = (step - (end - decay)) / decay
        return min_ratio / (p + min_ratio * (1 - p))
    return min_ratio


def build_lr_fn(args: OptimArgs, n_steps: int):
    """The schedule factor f(t) for a run of n_steps optimizer steps (picklable)."""
    if args.scheduler not in SCHEDULERS:
        raise ValueError(f"optim.scheduler={args.scheduler!r}; expected one of {SCHEDULERS}")
    if args.scheduler in ("cosine", "wsd") and n_steps * args.cycle_length < 1:
        raise ValueError(
            f"optim.cycle_length={args.cycle_length} gives cycles shorter than one step at steps={n_steps}"
        )
    if args.scheduler == "wsd" and not args.decay_fraction < args.cycle_length:
        raise ValueError(
            f"optim.decay_fraction={args.decay_fraction} must be smaller than cycle_length={args.cycle_length} for wsd"
        )
    w, m, c = args.warmup, args.lr_min_ratio, args.cycle_length
    if args.scheduler == "constant":
        return lr_constant
    if args.scheduler == "linear":
        return partial(lr_linear, warmup=w, n_steps=n_steps, min_ratio=m)
    if args.scheduler == "inv_sqrt":
        return partial(lr_inv_sqrt, warmup=w, exp_factor=args.exp_factor, min_ratio=m)
    if args.scheduler == "cosine":
        return partial(lr_cosine, warmup=w, n_steps=n_steps, cycle_length=c, theta=args.cosine_theta, min_ratio=m)
    d = args.decay_fraction
    return partial(lr_wsd, warmup=w, n_steps=n_steps, decay_fraction=d, cycle_length=c, min_ratio=m)


def build_optimizer(model: nn.Module, args: OptimArgs, n_steps: int):
    """(AdamW over all parameters in one group, LambdaLR with the configured schedule).

    Weight decay applies to every parameter (norms, embeddings, Canon kernels too). The fused
    AdamW kernel is used when every parameter lives on CUDA.
    """
    params = list(model.parameters())
    optimizer = AdamW(
        params,
        lr=args.lr,
        betas=(args.beta1, args.beta2),
        weight_decay=args.weight_decay,
        eps=args.epsilon,
        fused=bool(params) and all(p.is_cuda for p in params),
    )
    return optimizer, LambdaLR(optimizer, build_lr_fn(args, n_steps))
