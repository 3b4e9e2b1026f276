import math

import pytest
import torch
from torch import nn

from lingua.optim import OptimArgs, build_lr_fn, build_optimizer


def spec_factor(a: OptimArgs, n, t):
    """The schedules written out as formulas, independently of lingua.optim (w, n, m, c, θ, e, d)."""
    w, m, c, theta, e, d = a.warmup, a.lr_min_ratio, a.cycle_length, a.cosine_theta, a.exp_factor, a.decay_fraction
    if a.scheduler == "constant":
        return 1.0
    if t < w:
        return t / w
    if a.scheduler == "linear":
        s = (t - w) / (n - w)
        return (1 - s) + s * m if t <= n else m
    if a.scheduler == "inv_sqrt":
        return max((w / t) ** e, m)
    if a.scheduler == "cosine":
        if t > n:
            return m
        sign = 1 if math.floor(t / (n * c)) % 2 == 0 else -1
        s = (t - w) / (n - w)
        return m + 0.5 * (1 - m) * (sign * math.cos(math.pi * s**theta / c) + 1)
    L = int(n * c)
    E = n if t == n else L * (math.floor(t / L) + 1)
    D = int(E * d)
    if t <= E - D:
        return 1.0
    if t <= E:
        p = (t - (E - D)) / D
        return 1 / (p / m + (1 - p))
    return m


CASES = [
    dict(scheduler="constant"),
    dict(scheduler="linear", warmup=10, lr_min_ratio=0.1),
    dict(scheduler="linear", warmup=0, lr_min_ratio=0.0),
    dict(scheduler="inv_sqrt", warmup=25, exp_factor=0.5, lr_min_ratio=0.2),
    dict(scheduler="inv_sqrt", warmup=7, exp_factor=0.8, lr_min_ratio=0.01),
    dict(scheduler="cosine", warmup=20, lr_min_ratio=0.01),
    dict(scheduler="cosine", warmup=0, lr_min_ratio=0.0),
    dict(scheduler="cosine", warmup=5, lr_min_ratio=0.1, cycle_length=0.4, cosine_theta=2.0),
    dict(scheduler="wsd", warmup=10, lr_min_ratio=0.05, decay_fraction=0.2),
    dict(scheduler="wsd", warmup=3, lr_min_ratio=0.1, decay_fraction=0.1, cycle_length=0.5),
]


@pytest.mark.parametrize("fields", CASES, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_schedules_follow_the_spec_formulas_at_every_step(fields):
    args, n = OptimArgs(**fields), 120
    fn = build_lr_fn(args, n)
    for t in range(0, 2 * n):
        assert fn(t) == pytest.approx(spec_factor(args, n, t), rel=1e-12, abs=1e-12), t


def test_schedule_landmarks():
    n = 110
    cosine = build_lr_fn(OptimArgs(scheduler="cosine", warmup=10, lr_min_ratio=0.01), n)
    assert [cosine(0), cosine(5), cosine(10), cosine(60), cosine(n + 1)] == pytest.approx([0, 0.5, 1, 0.505, 0.01])
    linear = build_lr_fn(OptimArgs(scheduler="linear", warmup=10, lr_min_ratio=0.2), n)
    assert [linear(60), linear(n)] == pytest.approx([0.6, 0.2])
    wsd = build_lr_fn(OptimArgs(scheduler="wsd", warmup=10, lr_min_ratio=0.1, decay_fraction=0.2), 100)
    assert [wsd(50), wsd(80), wsd(90), wsd(100)] == pytest.approx([1, 1, 1 / (0.5 / 0.1 + 0.5), 0.1])


def test_degenerate_settings_the_reference_divides_by_zero_on():
    wsd = build_lr_fn(OptimArgs(scheduler="wsd", warmup=10, lr_min_ratio=0.0, decay_fraction=0.2), 100)
    assert wsd(80) == 1.0 and wsd(81) == 0.0 and wsd(100) == 0.0  # the limit of the harmonic decay to 0
    small = build_lr_fn(OptimArgs(scheduler="wsd", warmup=10, lr_min_ratio=1e-9, decay_fraction=0.2), 100)
    assert small(90) == pytest.approx(wsd(90), abs=1e-8)
    inv_sqrt = build_lr_fn(OptimArgs(scheduler="inv_sqrt", warmup=0, lr_min_ratio=0.1), 100)
    assert inv_sqrt(0) == 1.0 and inv_sqrt(1) == 0.1
    short = build_lr_fn(OptimArgs(scheduler="cosine", warmup=50, lr_min_ratio=0.1), 50)
    assert [short(49), short(50)] == pytest.approx([0.98, 0.1])  # warmup == steps: no 0 / 0 at t = n


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(scheduler="exp"), "scheduler='exp'"),
        (dict(scheduler="wsd", decay_fraction=0.5, cycle_length=0.5), "decay_fraction=0.5"),
        (dict(scheduler="cosine", cycle_length=0.001), "cycle_length=0.001"),
    ],
)
def test_bad_schedules_give_one_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        build_lr_fn(OptimArgs(**fields), 100)


def test_adamw_covers_every_parameter_and_lambdalr_applies_the_factor():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    args = OptimArgs(lr=3e-3, weight_decay=0.0133, epsilon=1e-7, beta1=0.8, beta2=0.9, warmup=4, lr_min_ratio=0.01)
    optimizer, scheduler = build_optimizer(model, args, n_steps=20)
    (group,) = optimizer.param_groups
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}
    assert group["betas"] == (0.8, 0.9) and group["eps"] == 1e-7 and group["weight_decay"] == 0.0133
    assert not group["fused"]  # CPU parameters: the fused kernel is for CUDA only
    fn = build_lr_fn(args, 20)
    for t in range(25):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * fn(t)), t
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    assert scheduler.state_dict()["last_epoch"] == 25
