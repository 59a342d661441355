"""Dtype and op facts shared by the NumPy and CuPy kernels (no array work here)."""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["HALF_DTYPES", "OPS", "compute_dtype", "packed_offsets", "op_name"]

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
HALF_DTYPES = (np.dtype(np.float16), BFLOAT16)
OPS = ("sum", "max", "min")


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
