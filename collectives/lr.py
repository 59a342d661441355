"""The learning rate of large-minibatch data parallelism: linear scaling with gradual warmup.

Goyal et al. 2017 (ImageNet in 1 hour): when the global minibatch is k times the one a
learning rate was tuned for, multiply the rate by k; start from the small-batch rate and
grow it linearly to the scaled one over the first steps, since the scaled rate is unstable
while the network changes fast::

    scale = batch / base_batch
    lr(step) = base_lr * (1 + (scale - 1) * step / warmup_steps)    for step < warmup_steps
    lr(step) = base_lr * scale                                      after

Example::

    lr = scaled_learning_rate(step, base_lr=0.1, batch=32 * comm.size, base_batch=32,
                              warmup_steps=100)
    scheduler = scaled_lr_scheduler(optimizer, batch=32 * comm.size, base_batch=32,
                                    warmup_steps=100)      # torch: scheduler.step() per step
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["scaled_learning_rate", "scaled_lr_scheduler"]


def scaled_learning_rate(step: int, *, base_lr: float, batch: int, base_batch: int = 256,
                         warmup_steps: int = 0) -> float:
    """The learning rate at `step` (0-based) for a global minibatch of `batch` samples, given
    `base_lr` tuned for `base_batch` (see the module docstring). ValueError naming the
    argument for a count that is no int (NumPy's count) or out of range, a `base_lr` that
    is no finite number > 0, and a rate that is no finite number > 0."""
    batch, base_batch, warmup_steps = _check(batch, base_batch, warmup_steps)
    step = _count("step", step, 0)
    _positive_rate("base_lr", base_lr)
    try:
        scale = batch / base_batch
        rate = (base_lr * scale if step >= warmup_steps
                else base_lr * (1 + (scale - 1) * step / warmup_steps))
    except OverflowError:  # (a base_lr int beyond a float's range)
        rate = math.inf
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"base_lr {base_lr!r} scaled by batch / base_batch = {batch} / "
                         f"{base_batch} at step {step} gives {rate}: not a finite rate > 0")
    return float(rate)


def scaled_lr_scheduler(optimizer, *, batch: int, base_batch: int = 256, warmup_steps: int = 0):
    """A torch LR scheduler (LambdaLR) under which every parameter group's learning rate, as
    the optimizer was given it, is a `base_lr` of `scaled_learning_rate`. Call its `step()`
    after each optimizer step.

    Example::

        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)    # tuned for base_batch
        scheduler = scaled_lr_scheduler(optimizer, batch=256 * world, base_batch=256,
                                        warmup_steps=500)
    """
    from torch.optim.lr_scheduler import LambdaLR

    _check(batch, base_batch, warmup_steps)
    return LambdaLR(optimizer, lambda step: scaled_learning_rate(
        step, base_lr=1.0, batch=batch, base_batch=base_batch, warmup_steps=warmup_steps))


def _check(batch, base_batch, warmup_steps) -> tuple[int, int, int]:
    return (_count("batch", batch, 1), _count("base_batch", base_batch, 1),
            _count("warmup_steps", warmup_steps, 0))


def _count(name: str, value, low: int) -> int:
    """`value` as an int in [low, 2**63) (a NumPy integer too, not a bool); ValueError
    naming it (10**400 raised a bare OverflowError)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
            or not low <= value < 2**63:
        raise ValueError(f"{name} must be an int in [{low}, 2**63), got {value!r}")
    return int(value)


def _positive_rate(name: str, value) -> None:
    try:
        good = (not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real)
                and math.isfinite(value) and value > 0)
    except OverflowError:  # (an int beyond a float's range)
        good = False
    if not good:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
