"""The power-of-two scale that keeps every partial sum of a compressed all-reduce in range.

Every rank agrees on the max of max|x| over ranks (one all-reduce of one float); the scale
`s` satisfies ``s * bound <= max16 / 2`` where bound is p * max|x| for sum (the largest
partial sum any algorithm forms) and max|x| for avg, max and min (avg divides by p before
the cast, as in PyTorch's fp16 hook). Only finite values count: a NaN or Inf somewhere
stays NaN or Inf where it is, and the other values are scaled as if it were absent.

Example::

    >>> scale_for(HalfCodec("fp16"), 60000.0, 4, Op.SUM)   # 4 * 60000 / 8 <= 32752
    0.125
"""
from __future__ import annotations

import math

import kernels

from ..options import Op

__all__ = ["absmax", "scale_for"]

# Scales stay inside float32's normal range, so x * s and its inverse are exact.
_MIN_EXP = -126


def absmax(work) -> float:
    """max|v| over the finite values v of `work` as a Python float (0.0 when there are
    none), in one pass (kernels.absmax)."""
    return kernels.absmax(work)


def scale_for(codec, agreed_absmax: float, size: int, op: Op) -> float:
    """The power of two s with s * bound <= max16 / 2 (1.0 when there is nothing to scale)."""
    bound = agreed_absmax * (size if op is Op.SUM else 1)
    if bound == 0.0 or not math.isfinite(bound):
        return 1.0
    exponent = math.frexp(codec.max_value / 2 / bound)[1] - 1  # floor(log2(limit / bound))
    return math.ldexp(1.0, min(max(exponent, _MIN_EXP), codec.max_exp))
