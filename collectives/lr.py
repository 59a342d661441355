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

__all__ = ["scaled_learning_rate", "scaled_lr_scheduler"]


def scaled_learning_rate(step: int, *, base_lr: float, batch: int, base_batch: int = 256,
                         warmup_steps: int = 0) -> float:
    """The learning rate at `step` (0-based) for a global minibatch of `batch` samples, given
    `base_lr` tuned for `base_batch` (see the module docstring)."""
    _check(batch, base_batch, warmup_steps)
    if not base_lr > 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    scale = batch / base_batch
    if step >= warmup_steps:
        return base_lr * scale
    return base_lr * (1 + (scale - 1) * step / warmup_steps)


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


def _check(batch: int, base_batch: int, warmup_steps: int) -> None:
    for name, value, low in (("batch", batch, 1), ("base_batch", base_batch, 1),
                             ("warmup_steps", warmup_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
