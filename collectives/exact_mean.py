"""Exact averages of integers: floor(sum / p), with no overflow of the sum on the way.

A sum of p int32 values fits in int64, so int32 is summed in int64. An int64 value x is
split into halves x = hi * 2**32 + lo (hi = x >> 32, 0 <= lo < 2**32); the sums H and L of
the halves fit in int64 for p < 2**30, and with H = q p + r (0 <= r < p)

    floor((H 2**32 + L) / p) = q 2**32 + floor((r 2**32 + L) / p)

where every term fits again. The wide buffer carries twice the bytes: integer avg is rare.

Example::

    wide = np.empty(wide_length(x.dtype, x.size), np.int64)
    pack([x], wide, x.dtype); <sum wide over ranks>; finish(wide, out, size)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

import kernels

__all__ = ["wide_length", "pack", "finish"]

_LOW = (1 << 32) - 1


def wide_length(dtype: np.dtype, count: int) -> int:
    """int64 elements of the wide buffer for `count` integers of `dtype`."""
    return 2 * count if np.dtype(dtype).itemsize == 8 else count


def pack(arrays: Sequence, wide, dtype: np.dtype) -> None:
    """Write the arrays' values into `wide` in the form `finish` expects."""
    if np.dtype(dtype).itemsize != 8:
        kernels.pack(arrays, wide)
        return
    n = wide.size // 2
    xp = kernels.array_module(wide)
    kernels.pack(arrays, wide[n:])
    xp.right_shift(wide[n:], 32, out=wide[:n])
    xp.bitwise_and(wide[n:], _LOW, out=wide[n:])


def finish(wide, out, size: int) -> None:
    """out = floor(sum / size), from the summed wide buffer, in out's dtype."""
    xp = kernels.array_module(wide)
    if out.size == wide.size:
        xp.floor_divide(wide, size, out=wide)
        kernels.copy_into(out, wide.astype(out.dtype, copy=False))
        return
    n = out.size
    high, low = wide[:n], wide[n:]
    remainder = xp.remainder(high, size)
    xp.floor_divide(high, size, out=high)
    xp.left_shift(remainder, 32, out=remainder)
    xp.add(remainder, low, out=low)
    xp.floor_divide(low, size, out=low)
    xp.left_shift(high, 32, out=high)
    xp.add(high, low, out=out)
