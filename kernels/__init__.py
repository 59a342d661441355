"""Layer 1: local array kernels, dispatched on the array's module (NumPy or CuPy).

Arrays are 1-D and contiguous unless a function says otherwise, and all of one module; the
kernel runs on the module of its first array argument. The NumPy twin (`kernels._numpy`)
is the reference. NumPy arrays run `kernels._cpu`: the compiled codec (`kernels._codec`,
same bits, memory speed) for every kernel that touches a 16-bit float, the NumPy twin for
the rest; without the compiled codec (no compiler at install) the NumPy twin runs it all,
and `cpu_backend()` says which. The CuPy twin (`kernels._cupy`) is imported only when a
CuPy array arrives. Ops are "sum", "max", "min" (NaN propagates, as in `np.maximum`).
16-bit floats (float16, bfloat16) are computed in float32 and rounded once.

Example::

    >>> import numpy as np, kernels
    >>> a, b = np.ones(4, np.float32), np.full(4, 2, np.float32)
    >>> kernels.reduce_into(a, b, "sum"); a
    array([3., 3., 3., 3.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from kernels import _numpy
from kernels._common import (HALF_DTYPES, OPS, byte_extent, compute_dtype, gpu_module,
                             packed_offsets, quiet)

try:
    from kernels import _codec  # built by the install where a C++17 compiler works
except ImportError:
    _codec = None
    _HOST = _numpy
else:
    from kernels import _cpu as _HOST

try:
    from kernels import _extents  # built with the codec, where a C compiler works
except ImportError:
    _extents = None

try:
    from kernels import _gather  # likewise
except ImportError:
    _gather = None

__all__ = [
    "HALF_DTYPES",
    "OPS",
    "absmax",
    "array_module",
    "byte_extents",
    "combine_into",
    "compress_into",
    "compute_dtype",
    "copy_into",
    "cpu_backend",
    "decompress_into",
    "decompress_reduce_into",
    "divide_into",
    "encode_into",
    "gpu_module",
    "pack",
    "packed_offsets",
    "quantize_into",
    "quantize_residual_into",
    "quiet",
    "reduce_into",
    "scale_into",
    "unpack",
]


def array_module(x: Any) -> ModuleType:
    """`cupy` for a CuPy array (imported only then), else `numpy`."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def cpu_backend() -> str:
    """What runs the 16-bit kernels on NumPy arrays: the compiled codec's instruction set
    ("avx512", "avx2" or "portable"), or "numpy" where the codec was not built."""
    return "numpy" if _codec is None else _codec.isa()


def _impl(x: Any) -> ModuleType:
    """The kernel twin for x: `kernels._cpu` (or `_numpy`), or `kernels._cupy` for a CuPy array."""
    if type(x) is np.ndarray or not type(x).__module__.startswith("cupy"):
        return _HOST
    from kernels import _cupy

    return _cupy


def reduce_into(dst: Any, src: Any, op: str) -> None:
    """dst = dst (op) src elementwise, in place; op in "sum", "max", "min"."""
    _impl(dst).reduce_into(dst, src, op)


def combine_into(dst: Any, a: Any, b: Any, op: str) -> None:
    """dst = a (op) b elementwise (operand order decides which of +0/-0 or NaNs max/min keep)."""
    _impl(dst).combine_into(dst, a, b, op)


def copy_into(dst: Any, src: Any) -> None:
    """dst[...] = src."""
    _impl(dst).copy_into(dst, src)


def divide_into(buf: Any, divisor: float) -> None:
    """The avg finish: buf /= divisor for floats (one rounding; any divisor), buf //= divisor
    (floor; an int divisor) for ints."""
    _impl(buf).divide_into(buf, divisor)


def scale_into(dst: Any, src: Any, scale: float) -> None:
    """dst = src * scale for floats: the product in src's compute dtype, rounded once to dst's.

    Any float dtypes, dst may be src (in place). compress_into and decompress_into are
    its 16-bit special cases; this one also widens and unscales a 16-bit result in one pass.
    """
    _impl(dst).scale_into(dst, src, scale)


def compress_into(dst16: Any, src: Any, scale: float = 1.0) -> None:
    """dst16 = round_to_16_bits(src * scale): float16 or bfloat16 wire format, one rounding.

    The product is computed in float32 (float64 for a float64 src); values past the 16-bit
    range become inf, so choose scale to keep them inside it.
    """
    _impl(dst16).compress_into(dst16, src, scale)


def decompress_into(dst: Any, src16: Any) -> None:
    """dst = src16, widened exactly to dst's dtype (float32 or float64)."""
    _impl(dst).decompress_into(dst, src16)


def decompress_reduce_into(acc: Any, src16: Any, op: str) -> None:
    """acc = acc (op) widen(src16) elementwise, in acc's dtype: the fp32-accumulate step."""
    _impl(acc).decompress_reduce_into(acc, src16, op)


def encode_into(wire16: Any, work: Any) -> None:
    """wire16 = round_to_16_bits(work), then work = widen(wire16), in one pass.

    A send's payload, the sender keeping exactly the value it sent (quantize on send): the
    bits of compress_into(wire16, work, 1.0) followed by decompress_into(work, wire16).
    work is float32 or float64; wire16 float16 or bfloat16, apart from work.
    """
    _impl(wire16).encode_into(wire16, work)


def quantize_into(dst: Any, src: Any, wire: Any, scale: float = 1.0) -> None:
    """dst = round_dst(widen(round_to_wire(src)) * scale), in one pass; dst may be src.

    src (float32 or float64) rounded to the 16-bit dtype `wire` and back, times scale (in
    float32), rounded once to dst's dtype (any float): the bits of compress_into(tmp, src,
    1.0) followed by scale_into(dst, tmp, scale). The last step of a compressed all-reduce
    (round to the wire, unscale, cast to the input's dtype); with dst = src and scale 1, a
    plain in-place quantize. Example::

        >>> import numpy as np, kernels
        >>> x = np.array([1 / 3], np.float32)
        >>> kernels.quantize_into(x, x, np.dtype(np.float16), 2.0); x
        array([0.6665039], dtype=float32)
    """
    _impl(dst).quantize_into(dst, src, wire, scale)


def quantize_residual_into(work: Any, residual: Any, wire: Any, scale: float) -> None:
    """Error feedback's scaling, in one pass over work (float32 or float64) and residual:

    t = work * scale; work = widen(round_to_wire(t)); residual = (t - work) * (1 / scale),
    the products in work's dtype: the bits of scaling work, copying it to residual,
    quantizing work, subtracting and unscaling, one pass each. The residual is 0 where it
    is not finite: a NaN or inf input carries nothing into the next call.
    """
    _impl(work).quantize_residual_into(work, residual, wire, scale)


def absmax(x: Any) -> float:
    """max |v| over the finite values v of x as a Python float, in one read pass (0.0 when
    there are none): the bound a compressed all-reduce scales by, NaN and inf left out."""
    return _impl(x).absmax(x)


def byte_extents(arrays: Sequence[Any]) -> list[tuple[int, int]]:
    """[first byte, last byte + 1) of the memory each array (any shape and layout) may touch;
    (0, 0) for an empty one. NumPy arrays go through the compiled `kernels._extents` where it
    was built (about 0.1 us an array against 1.7 us), others through `byte_extent`."""
    arrays = tuple(arrays)  # (an iterator is read once)
    if _extents is not None and all(type(a) is np.ndarray for a in arrays):
        return _extents.byte_extents(arrays)
    return [byte_extent(a) for a in arrays]


def pack(arrays: Sequence[Any], flat: Any) -> int:
    """Copy each array (any shape and layout), raveled in C order, into consecutive slices of flat.

    flat is 1-D with at least sum(a.size) elements; values are cast to flat's dtype
    ("same_kind"). Returns the number of elements written. Example::

        >>> import numpy as np, kernels
        >>> flat = np.empty(5, np.float32)
        >>> kernels.pack([np.ones((2, 2)), np.zeros(1)], flat)
        5
    """
    if _copies_bytes(flat):
        count = _gather.gather(arrays, flat)
        if count is not NotImplemented:
            return count
    return _impl(flat).pack(arrays, flat)


def unpack(flat: Any, outs: Sequence[Any]) -> int:
    """Inverse of pack: fill each out (any shape and layout) from consecutive slices of flat.

    Returns the number of elements read.
    """
    if _copies_bytes(flat):
        count = _gather.scatter(flat, outs)
        if count is not NotImplemented:
            return count
    return _impl(flat).unpack(flat, outs)


def _copies_bytes(flat: Any) -> bool:
    """Whether pack/unpack may try the compiled byte copies (`kernels._gather`: one call for
    all the arrays where each is a C-contiguous ndarray of flat's dtype, about 0.4 us an
    array against 0.6-1.3 us; it declines the rest)."""
    return _gather is not None and type(flat) is np.ndarray
