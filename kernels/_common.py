"""Dtype and op facts shared by the NumPy and CuPy kernels (no array work here)."""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["HALF_DTYPES", "KERNELS", "OPS", "compute_dtype", "gpu_module", "packed_offsets",
           "op_name"]

# The kernels every twin (NumPy, compiled CPU, CuPy) defines with one signature.
KERNELS = ("absmax", "combine_into", "compress_into", "copy_into", "decompress_into",
           "decompress_reduce_into", "divide_into", "encode_into", "pack", "quantize_into",
           "quantize_residual_into", "reduce_into", "scale_into", "unpack")

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


def gpu_module() -> Any:
    """CuPy when it imports and sees a CUDA device, else None."""
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # no cupy, no driver, no device
        return None
