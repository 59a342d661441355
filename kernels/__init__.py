"""Layer 1: local array kernels, dispatched on the array's module (NumPy or CuPy).

Every function takes 1-D contiguous arrays of one module; the NumPy twin is the reference.

Example::

    >>> import numpy as np, kernels
    >>> a, b = np.ones(4, np.float32), np.full(4, 2, np.float32)
    >>> kernels.reduce_into(a, b, "sum"); a
    array([3., 3., 3., 3.], dtype=float32)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from kernels import _numpy

__all__ = ["array_module", "copy_into", "divide_into", "reduce_into"]


def array_module(x: Any) -> ModuleType:
    """`cupy` for a CuPy array (imported only then), else `numpy`."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def _impl(x: Any) -> ModuleType:
    """The kernel module (`kernels._numpy` or `kernels._cupy`) for x's array module."""
    if array_module(x) is np:
        return _numpy
    from kernels import _cupy

    return _cupy


def reduce_into(dst: Any, src: Any, op: str) -> None:
    """dst = dst (op) src elementwise, in place; op in "sum", "max", "min" (NaN propagates)."""
    _impl(dst).reduce_into(dst, src, op)


def copy_into(dst: Any, src: Any) -> None:
    """dst[...] = src."""
    _impl(dst).copy_into(dst, src)


def divide_into(buf: Any, divisor: int) -> None:
    """The avg finish: buf /= divisor for floats (16-bit via float32, one rounding); buf //= divisor for ints."""
    _impl(buf).divide_into(buf, divisor)
