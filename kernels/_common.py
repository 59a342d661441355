"""Dtype and op facts shared by the NumPy and CuPy kernels, and where an array lies in
memory (`byte_extent`); no array work here."""

from __future__ import annotations

import functools
from collections.abc import Callable
from itertools import accumulate
from typing import Any, TypeVar

import ml_dtypes
import numpy as np

__all__ = ["HALF_DTYPES", "KERNELS", "OPS", "byte_extent", "compute_dtype", "gpu_module",
           "packed_offsets", "op_name", "quiet"]

# The kernels every twin (NumPy, compiled CPU, CuPy) defines with one signature.
KERNELS = ("absmax", "combine_into", "compress_into", "copy_into", "decompress_into",
           "decompress_reduce_into", "divide_into", "encode_into", "pack", "quantize_into",
           "quantize_residual_into", "reduce_into", "scale_into", "unpack")

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
HALF_DTYPES = (np.dtype(np.float16), BFLOAT16)
OPS = ("sum", "max", "min")


F = TypeVar("F", bound=Callable)


def quiet(func: F) -> F:
    """`func` with NumPy's floating-point events ignored (inf - inf, overflow to inf, NaN
    compares are data, never warnings or errors), as `@np.errstate(all="ignore")` does.

    NumPy 2's errstate builds its state anew on every call (about 0.8 us, as much as a small
    ufunc call, on the executor's path per segment); here it is built once and only set and
    reset per call. Older NumPy, without that state, gets errstate itself.
    """
    try:
        from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj
    except ImportError:
        return np.errstate(all="ignore")(func)
    ignoring = _make_extobj(all="ignore")

    @functools.wraps(func)
    def quietly(*args, **kwargs):
        token = _extobj_contextvar.set(ignoring)
        try:
            return func(*args, **kwargs)
        finally:
            _extobj_contextvar.reset(token)

    return quietly  # type: ignore[return-value]


def op_name(op: Any) -> str:
    """Validate a reduction op ("sum", "max", "min"; a str-valued enum works too)."""
    name = getattr(op, "value", op)
    if name not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    return name


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype arithmetic runs in: float32 for 16-bit floats, else the dtype itself."""
    return np.dtype(np.float32) if dtype in HALF_DTYPES else np.dtype(dtype)


def packed_offsets(arrays: Any) -> list[int]:
    """Start of each array in the packed buffer, then the total: [0, n0, n0+n1, ...]."""
    return list(accumulate((a.size for a in arrays), initial=0))


def byte_extent(array: Any) -> tuple[int, int]:
    """[first byte, last byte + 1) of the memory `array` (NumPy or CuPy, any layout) may
    touch; (0, 0) when it is empty. The reference of kernels._extents."""
    if array.size == 0:
        return 0, 0
    start = (array.__array_interface__["data"][0] if isinstance(array, np.ndarray)
             else array.data.ptr)
    low = high = start
    for extent, stride in zip(array.shape, array.strides):
        if stride < 0:
            low += (extent - 1) * stride
        else:
            high += (extent - 1) * stride
    return low, high + array.itemsize


def gpu_module() -> Any:
    """CuPy when it imports and sees a CUDA device, else None."""
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # no cupy, no driver, no device
        return None
