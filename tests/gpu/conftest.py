"""Every test here needs a CUDA GPU with CuPy; without one they are skipped, saying why."""
from __future__ import annotations

import functools

import pytest


@functools.cache
def missing_gpu() -> str | None:
    """Why CuPy cannot run kernels here, or None when a GPU is usable."""
    try:
        import cupy
    except ImportError as error:
        return f"CuPy is not installed ({error}); install the project's `gpu` extra"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        return f"no usable CUDA device ({error})"
    return None if count else "no CUDA device"


@pytest.fixture(autouse=True)
def _needs_gpu():
    reason = missing_gpu()
    if reason is not None:
        pytest.skip(reason)
