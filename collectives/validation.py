"""Checks of what the caller passed; each failure names the argument, expected vs got.

Example::

    >>> import numpy as np
    >>> check_array(np.zeros(3, np.complex64))
    Traceback (most recent call last):
    TypeError: unsupported dtype complex64; supported: float16, bfloat16, float32, float64, int32, int64
"""
from __future__ import annotations

import numpy as np

import kernels

from .options import check_dtype

__all__ = ["check_array", "check_out"]


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or (
        type(x).__module__.startswith("cupy") and type(x).__name__ == "ndarray"
    )


def check_array(x, name: str = "x") -> None:
    """`x` must be a NumPy or CuPy array of a supported dtype."""
    if not _is_array(x):
        hint = " (wrap it with np.asarray)" if isinstance(x, (list, tuple, int, float)) else ""
        raise TypeError(
            f"{name} must be a NumPy or CuPy array, got {type(x).__module__}.{type(x).__qualname__}"
            + hint
        )
    check_dtype(x.dtype)


def check_out(out, x) -> None:
    """`out` must be able to hold the result of reducing `x`: same type, shape and dtype.

    `out is x` reduces in place (x must be writable); any other `out` must not share memory
    with x.
    """
    writable = getattr(out.flags, "writeable", True) if _is_array(out) else True
    if out is x:
        if not writable:
            raise ValueError("out is x but x is read-only; in-place all-reduce needs a writable array")
        return
    if type(out) is not type(x):
        raise TypeError(
            f"out must be a {type(x).__module__}.{type(x).__qualname__} like x, "
            f"got {type(out).__module__}.{type(out).__qualname__}"
        )
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(
            f"out must match x: expected shape {x.shape} dtype {x.dtype}, "
            f"got shape {out.shape} dtype {out.dtype}"
        )
    if not writable:
        raise ValueError("out is read-only; pass a writable array")
    if kernels.array_module(x).shares_memory(out, x):
        raise ValueError("out overlaps x partially; pass out=x for in place, or a separate array")
