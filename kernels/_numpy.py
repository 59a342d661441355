"""NumPy kernels: the reference implementation of every kernel in `kernels`.

16-bit floats (float16, bfloat16) are computed in float32 and rounded to 16 bits once,
in cache-sized blocks so no full-size temporary is allocated.
"""

from __future__ import annotations

from collections.abc import Iterator

import ml_dtypes
import numpy as np

__all__ = ["copy_into", "divide_into", "reduce_into"]

HALF_DTYPES = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
UFUNCS = {"sum": np.add, "max": np.maximum, "min": np.minimum}
BLOCK = 1 << 14  # elements per float32 block: 64 KiB, stays in L2


def ufunc_for(op: str) -> np.ufunc:
    """The NumPy ufunc of a reduction op name ("sum", "max", "min"; a str enum works too)."""
    try:
        return UFUNCS[getattr(op, "value", op)]
    except KeyError:
        raise ValueError(f"op must be one of {sorted(UFUNCS)}, got {op!r}") from None


def blocks(n: int) -> Iterator[slice]:
    """Consecutive slices of at most BLOCK elements covering range(n)."""
    for lo in range(0, n, BLOCK):
        yield slice(lo, min(lo + BLOCK, n))


def reduce_into(dst: np.ndarray, src: np.ndarray, op: str) -> None:
    """dst = dst (op) src elementwise, in place."""
    ufunc = ufunc_for(op)
    with np.errstate(all="ignore"):  # inf - inf, NaN compares and 16-bit overflow are data, not errors
        if dst.dtype not in HALF_DTYPES:
            ufunc(dst, src, out=dst)
            return
        scratch = np.empty(min(dst.size, BLOCK), np.float32)
        for s in blocks(dst.size):
            acc = scratch[: s.stop - s.start]
            np.copyto(acc, dst[s])
            ufunc(acc, src[s], out=acc)
            np.copyto(dst[s], acc, casting="unsafe")


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src."""
    np.copyto(dst, src)


def divide_into(buf: np.ndarray, divisor: int) -> None:
    """The avg finish: buf /= divisor for floats (16-bit in float32, one rounding), buf //= divisor for ints."""
    if buf.dtype.kind in "iu":
        np.floor_divide(buf, divisor, out=buf)
    elif buf.dtype in HALF_DTYPES:
        scratch = np.empty(min(buf.size, BLOCK), np.float32)
        for s in blocks(buf.size):
            acc = scratch[: s.stop - s.start]
            np.copyto(acc, buf[s])
            np.divide(acc, np.float32(divisor), out=acc)
            np.copyto(buf[s], acc, casting="unsafe")
    else:
        np.divide(buf, divisor, out=buf)
