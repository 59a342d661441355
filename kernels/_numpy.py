"""NumPy kernels: the reference implementation of every kernel in `kernels`.

16-bit floats are computed in float32 and rounded once: each ufunc runs its float32 loop
(`dtype=`) over NumPy's internal cast buffers, so no full-size temporary is made. Floating
point events (inf - inf, overflow to inf, NaN compares) are data here, never warnings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from kernels._common import HALF_DTYPES, KERNELS, compute_dtype, op_name, quiet

__all__ = list(KERNELS)

_UFUNCS = {"sum": np.add, "max": np.maximum, "min": np.minimum}
_BLOCK = 1 << 14  # elements per block where a kernel needs scratch: 128 KiB of float64


@quiet
def reduce_into(dst: np.ndarray, src: np.ndarray, op: str) -> None:
    """dst = dst (op) src elementwise, in place."""
    _UFUNCS[op_name(op)](dst, src, out=dst, dtype=compute_dtype(dst.dtype), casting="unsafe")


def combine_into(dst: np.ndarray, a: np.ndarray, b: np.ndarray, op: str) -> None:
    """dst = a (op) b elementwise; dst may be a or b."""
    combiner(op, dst.dtype, a.dtype, b.dtype)(dst, a, b)


_COMBINERS: dict[tuple, Callable[[np.ndarray, np.ndarray, np.ndarray], None]] = {}


def combiner(op: str, dst_dtype: np.dtype, a_dtype: np.dtype,
             b_dtype: np.dtype) -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """`combine_into` for one op and dtypes, decided once and kept: on the executor's path
    per segment received, where the lookups cost as much as a small ufunc call."""
    key = (op, dst_dtype, a_dtype, b_dtype)
    try:
        found = _COMBINERS.get(key)
    except TypeError:  # an unhashable op
        found = None
    if found is None:
        ufunc, dtype = _UFUNCS[op_name(op)], compute_dtype(dst_dtype)

        def found(dst: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
            ufunc(a, b, out=dst, dtype=dtype, casting="unsafe")

        if not all(d.kind in "iub" for d in key[1:]):  # integers raise no float warnings
            found = quiet(found)
        _COMBINERS[key] = found
    return found


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src."""
    np.copyto(dst, src)


@quiet
def divide_into(buf: np.ndarray, divisor: float) -> None:
    """buf /= divisor for floats (16-bit in float32, one rounding); buf //= divisor for ints."""
    if buf.dtype.kind in "iu":
        np.floor_divide(buf, divisor, out=buf)
    else:
        np.divide(buf, divisor, out=buf, dtype=compute_dtype(buf.dtype), casting="unsafe")


@quiet
def scale_into(dst: np.ndarray, src: np.ndarray, scale: float) -> None:
    """dst = src * scale, the product in src's compute dtype, rounded once to dst's dtype."""
    if src.dtype != np.float64 or dst.dtype not in HALF_DTYPES:
        np.multiply(src, scale, out=dst, dtype=compute_dtype(src.dtype), casting="unsafe")
        return
    # float64 -> 16 bits through float32 rounded to odd: one correct rounding, whereas
    # ml_dtypes' float64 -> bfloat16 cast rounds twice (via float32, to nearest).
    wide, narrow = np.empty(min(src.size, _BLOCK)), np.empty(min(src.size, _BLOCK), np.float32)
    for lo in range(0, src.size, _BLOCK):
        n = min(_BLOCK, src.size - lo)
        np.multiply(src[lo : lo + n], scale, out=wide[:n])
        _to_float32_round_to_odd(wide[:n], narrow[:n])
        np.copyto(dst[lo : lo + n], narrow[:n], casting="unsafe")


def compress_into(dst16: np.ndarray, src: np.ndarray, scale: float) -> None:
    """dst16 = round_to_16_bits(src * scale): scale_into onto a float16 or bfloat16 dst16."""
    if dst16.dtype not in HALF_DTYPES:
        raise TypeError(f"compress_into writes float16 or bfloat16, got {dst16.dtype}")
    scale_into(dst16, src, scale)


def _to_float32_round_to_odd(x: np.ndarray, out: np.ndarray) -> None:
    """out = x rounded toward zero to float32, lowest mantissa bit set when inexact."""
    np.copyto(out, x, casting="unsafe")  # to nearest; step back toward zero where it went past
    np.nextafter(out, np.float32(0), out=out, where=np.abs(out) > np.abs(x))
    np.bitwise_or(out.view(np.uint32), 1, out=out.view(np.uint32), where=out != x)


def decompress_into(dst: np.ndarray, src16: np.ndarray) -> None:
    """dst = src16, widened exactly (dst is float32 or float64)."""
    scale_into(dst, src16, 1.0)


@quiet
def decompress_reduce_into(acc: np.ndarray, src16: np.ndarray, op: str) -> None:
    """acc = acc (op) widen(src16) elementwise, in acc's dtype."""
    _UFUNCS[op_name(op)](acc, src16, out=acc, dtype=acc.dtype, casting="unsafe")


def encode_into(wire16: np.ndarray, work: np.ndarray) -> None:
    """wire16 = round16(work), then work = widen(wire16): the payload, and what the sender keeps."""
    compress_into(wire16, work, 1.0)
    decompress_into(work, wire16)


def quantize_into(dst: np.ndarray, src: np.ndarray, wire: np.dtype, scale: float) -> None:
    """dst = round_dst(widen(round_wire(src)) * scale), the product in float32; dst may be src."""
    narrow = np.empty(min(src.size, _BLOCK), wire)
    for lo in range(0, src.size, _BLOCK):
        hi = min(lo + _BLOCK, src.size)
        compress_into(narrow[: hi - lo], src[lo:hi], 1.0)
        scale_into(dst[lo:hi], narrow[: hi - lo], scale)


@quiet
def quantize_residual_into(work: np.ndarray, residual: np.ndarray, wire: np.dtype, scale: float) -> None:
    """t = work * scale; work = widen(round_wire(t)); residual = (t - work) * (1 / scale),
    0 where that is not finite."""
    scale_into(work, work, scale)
    copy_into(residual, work)
    quantize_into(work, work, wire, 1.0)
    np.subtract(residual, work, out=residual)
    scale_into(residual, residual, 1.0 / scale)
    np.copyto(residual, 0, where=~np.isfinite(residual))


def absmax(x: np.ndarray) -> float:
    """max |v| over the finite values v of x as a Python float (0.0 when there are none)."""
    if x.size == 0:
        return 0.0
    hi, lo = float(x.max()), float(x.min())
    if math.isfinite(hi) and math.isfinite(lo):
        return max(hi, -lo, 0.0)
    finite = np.isfinite(x)
    return float(np.abs(x).max(where=finite, initial=0.0)) if finite.any() else 0.0


def pack(arrays: Sequence[np.ndarray], flat: np.ndarray) -> int:
    """Write each array, raveled in C order, into consecutive slices of flat; return the count."""
    total = sum(a.size for a in arrays)
    if total:
        np.concatenate(arrays, axis=None, out=flat[:total], casting="same_kind")
    return total


def unpack(flat: np.ndarray, outs: Sequence[np.ndarray]) -> int:
    """Inverse of pack: fill each out (any shape, any layout, cast to its dtype) from flat."""
    lo = 0
    for out in outs:
        hi = lo + out.size
        out[...] = flat[lo:hi].reshape(out.shape)  # any layout, cast to out's dtype
        lo = hi
    return lo
