"""Checks of what the caller passed; each failure names the argument, expected vs got."""
from __future__ import annotations

import numpy as np

from .options import check_dtype

__all__ = ["check_array", "check_out"]


def check_array(x, name: str = "x") -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__module__}.{type(x).__name__}")
    check_dtype(x.dtype)


def check_out(out, x) -> None:
    """`out` must be able to hold the result of reducing `x`: same type, shape and dtype."""
    if out is x:
        if not x.flags.writeable:
            raise ValueError("out is x but x is read-only; in-place all-reduce needs a writable array")
        return
    if type(out) is not type(x):
        raise TypeError(f"out must be a {type(x).__name__} like x, got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(
            f"out must match x: expected shape {x.shape} dtype {x.dtype}, "
            f"got shape {out.shape} dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if np.shares_memory(out, x):
        raise ValueError("out overlaps x partially; pass out=x for in place, or a separate array")
