"""The power-of-two scale that keeps every partial sum of a compressed all-reduce in range.

Every rank agrees on the max of max|x| over ranks (one all-reduce of one float); the scale
`s` satisfies ``s * bound <= max16 / 2`` where bound is p * max|x| for sum (the largest
partial sum any algorithm forms) and max|x| for avg, max and min (avg divides by p before
the cast, as in PyTorch's fp16 hook). Only finite values count: a NaN or Inf somewhere
stays NaN or Inf where it is, and the other values are scaled as if it were absent.
Scales of float64 data reach down to float64's normal range (1e300 compresses); the
others stay in float32's, where the kernels multiply. `unscale_into` undoes a scale; a
value the 16-bit rounding pushed just past the largest finite value of x's dtype (65504
in bfloat16 is 65536) becomes that value, not inf: the exact result did not overflow.

Example::

    >>> scale_for(HalfCodec("fp16"), 60000.0, 4, Op.SUM)   # 4 * 60000 / 8 <= 32752
    0.125
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np

import kernels

from ..options import Op

__all__ = ["absmax", "scale_for", "unscale_into"]

# Scales stay inside the normal range of the dtype the kernels multiply in (float32, or
# float64 for float64 data), so x * s and its inverse are exact.
_MIN_EXP = {np.dtype(np.float64): -1022}
_FLOAT32_MIN_EXP = -126


def absmax(work) -> float:
    """max|v| over the finite values v of `work` as a Python float (0.0 when there are
    none), in one pass (kernels.absmax)."""
    return kernels.absmax(work)


def scale_for(codec, agreed_absmax: float, size: int, op: Op, dtype=np.float32) -> float:
    """The power of two s with s * bound <= max16 / 2 (1.0 when there is nothing to scale),
    for data of `dtype`."""
    if agreed_absmax == 0.0 or not math.isfinite(agreed_absmax):
        return 1.0
    limit = codec.max_value / 2 / agreed_absmax / (size if op is Op.SUM else 1)
    exponent = math.frexp(limit)[1] - 1  # floor(log2(limit)); bound * size may overflow
    lowest = _MIN_EXP.get(np.dtype(dtype), _FLOAT32_MIN_EXP)
    return math.ldexp(1.0, min(max(exponent, lowest), codec.max_exp))


def unscale_into(dst, src, scale: float, wire=None) -> None:
    """dst = src / scale, src rounded to the 16-bit `wire` dtype first when given (src may
    be dst). The kernels multiply in float32, in one pass; a float64 dst is unscaled in
    float64 (its values may lie beyond float32's range: the same bits where they do not)."""
    near = _near_top(dst.dtype, src, scale, wire)
    if dst.dtype != np.float64:
        if wire is None:
            kernels.scale_into(dst, src, 1.0 / scale)
        else:
            kernels.quantize_into(dst, src, wire, 1.0 / scale)
    else:
        if wire is None:
            kernels.copy_into(dst, src)
        else:
            kernels.quantize_into(dst, src, wire, 1.0)
        kernels.scale_into(dst, dst, 1.0 / scale)
    if near is not None:
        xp = kernels.array_module(dst)
        over = near & xp.isinf(dst)
        if over.any():
            top = float(ml_dtypes.finfo(dst.dtype).max)
            dst[over] = xp.copysign(top, dst[over].astype(np.float64)).astype(dst.dtype)


def _near_top(dtype, src, scale: float, wire):
    """Where a finite src lies within the 16-bit rounding of dtype's largest finite value
    once unscaled (an inf there is the rounding's, not a true overflow); None when no
    value can get there, which a look at the scale tells in the common case."""
    sixteen = ml_dtypes.finfo(src.dtype if wire is None else wire)
    top = float(ml_dtypes.finfo(dtype).max)
    if float(sixteen.max) <= top * scale:
        return None
    reach = top * scale * (1 + 2.0 ** -sixteen.nmant)
    return kernels.array_module(src).abs(src.astype(np.float64)) <= reach
