"""The power-of-two scale that keeps every partial sum of a compressed all-reduce in range.

Every rank agrees on the max of max|x| over ranks (one all-reduce of one float); the scale
`s` satisfies ``s * bound <= max16 / 2`` where bound is p * max|x| for sum (the largest
partial sum any algorithm forms) and max|x| for avg, max and min (avg divides by p before
the cast, as in PyTorch's fp16 hook). Only finite values count: a NaN or Inf somewhere
stays NaN or Inf where it is, and the other values are scaled as if it were absent.
Scales of float64 data span float64's normal range, down (1e300 compresses) and up
(1e-300 too, with either codec); the others stay in float32's, where the kernels multiply.
`unscale_into` undoes a scale; a value the 16-bit rounding pushed just past the largest
finite value of x's dtype (65504 in bfloat16 is 65536) becomes that value, not inf. The
wire cannot tell it from a result that truly overflowed by less than its rounding: that
one, too, comes back as the largest value.

Example::

    >>> scale_for(HalfCodec("fp16"), 60000.0, 4, Op.SUM)   # 4 * 60000 / 8 <= 32752
    0.125
"""
from __future__ import annotations

import functools
import math

import ml_dtypes
import numpy as np

import kernels

from ..options import Op

__all__ = ["absmax", "absmaxes", "scale_for", "scales_for", "unscale_into"]

_FLOAT64 = np.dtype(np.float64)


def _exponents(codec, dtype) -> tuple[int, int]:
    """(lowest, highest) exponent of a scale for data of `dtype`: inside the normal range of
    the dtype the kernels multiply in (float32, or float64 for float64 data), so x * s and
    its inverse are exact. float64 data may lie below every 16-bit range (1e-300): it is
    scaled up with either codec."""
    return (-1022, 1022) if np.dtype(dtype) == _FLOAT64 else (-126, codec.max_exp)


def absmax(work) -> float:
    """max|v| over the finite values v of `work` as a Python float (0.0 when there are
    none), in one pass (kernels.absmax)."""
    return kernels.absmax(work)


def scale_for(codec, agreed_absmax: float, size: int, op: Op, dtype=np.float32) -> float:
    """The power of two s with s * bound <= max16 / 2 (up to one float64 rounding of the
    quotient) for data of `dtype`; 1.0 when there is nothing to scale."""
    if agreed_absmax == 0.0 or not math.isfinite(agreed_absmax):
        return 1.0
    lowest, highest = _exponents(codec, dtype)
    # floor(log2(limit)); bound * size may overflow, and limit itself for float64 data: the
    # division by size comes first, so an infinite limit means any scale fits (by agreed
    # first, the size was lost in the overflow: inf at 16 ranks, the 101st review)
    limit = codec.max_value / 2 / (size if op is Op.SUM else 1) / agreed_absmax
    exponent = highest if math.isinf(limit) else math.frexp(limit)[1] - 1
    return math.ldexp(1.0, min(max(exponent, lowest), highest))


def absmaxes(flat: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """absmax of each run flat[starts[i]:starts[i + 1]] (the last to the end; starts
    increasing, every run non-empty) as float64: two passes over flat, no copy of it (the
    largest and smallest of each run, NaN passed over), then absmax itself for the runs
    that hold an infinity or only NaN."""
    ends = np.r_[starts[1:], flat.size]
    maxes = np.maximum(np.abs(np.fmax.reduceat(flat, starts).astype(np.float64)),
                       np.abs(np.fmin.reduceat(flat, starts).astype(np.float64)))
    for i in np.flatnonzero(~np.isfinite(maxes)):
        maxes[i] = absmax(flat[starts[i]:ends[i]])
    return maxes


def scales_for(codec, agreed: np.ndarray, size: int, op: Op, dtype=np.float32) -> np.ndarray:
    """scale_for of each of the float64 `agreed`, in whole-array operations (many arrays'
    scales at once; `tests/test_codec.py` holds the two to the same values)."""
    with np.errstate(divide="ignore", over="ignore"):
        limit = codec.max_value / 2 / (size if op is Op.SUM else 1) / agreed
    lowest, highest = _exponents(codec, dtype)
    exponent = np.where(np.isinf(limit), highest, np.frexp(limit)[1].astype(np.int64) - 1)
    scales = np.ldexp(1.0, np.clip(exponent, lowest, highest))
    scales[(agreed == 0) | ~np.isfinite(agreed)] = 1.0
    return scales


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
            top, _ = _limits(dst.dtype)
            dst[over] = xp.copysign(top, dst[over].astype(np.float64)).astype(dst.dtype)


def _near_top(dtype, src, scale: float, wire):
    """Where a finite src lies within the 16-bit rounding of dtype's largest finite value
    once unscaled (an inf there is the rounding's, not a true overflow); None when no
    value can get there, which a look at the scale tells in the common case."""
    sixteen, sixteen_mantissa = _limits(src.dtype if wire is None else wire)
    top, _ = _limits(dtype)
    if sixteen <= top * scale:
        return None
    reach = top * scale * (1 + 2.0 ** -sixteen_mantissa)
    return kernels.array_module(src).abs(src.astype(np.float64)) <= reach


@functools.cache
def _limits(dtype: np.dtype) -> tuple[float, int]:
    """(largest finite value, mantissa bits) of a float dtype (ml_dtypes.finfo is slow to
    build, and unscale_into runs per array of a fused deterministic bucket)."""
    info = ml_dtypes.finfo(dtype)
    return float(info.max), int(info.nmant)
