"""Kernels against an independent float64 reference, on NumPy and (when a GPU is present) CuPy."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import kernels

BF16 = np.dtype(ml_dtypes.bfloat16)
FLOATS = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
INTS = [np.dtype(np.int32), np.dtype(np.int64)]
DTYPES = FLOATS + INTS
OPS = ["sum", "max", "min"]
SIZES = [0, 1, 7, 1000, (1 << 20) + 3]
REF = {"sum": np.add, "max": np.maximum, "min": np.minimum}


def _gpu_present() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.fixture(
    params=[
        "numpy",
        pytest.param(
            "cupy", marks=pytest.mark.skipif(not _gpu_present(), reason="needs cupy and a CUDA GPU")
        ),
    ]
)
def xp(request):
    """The array module under test."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy


def to_host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def rounded(exact: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round float64 values to dtype once (via float32 for 16-bit floats: innocuous double rounding)."""
    if dtype.itemsize == 2:
        return exact.astype(np.float32).astype(dtype)
    return exact.astype(dtype)


def random_array(n: int, dtype: np.dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype.kind == "i":
        hi = np.iinfo(dtype).max // 4
        return rng.integers(-hi, hi, n, dtype=dtype)
    # mixed magnitudes, so sums round in interesting ways
    return (rng.standard_normal(n) * np.exp2(rng.integers(-8, 8, n))).astype(dtype)


def same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reduce_into(xp, dtype, op, n):
    a, b = random_array(n, dtype, 1), random_array(n, dtype, 2)
    want = rounded(REF[op](a.astype(np.float64), b.astype(np.float64)), dtype)
    if dtype.kind == "i":
        want = REF[op](a.astype(object), b.astype(object)).astype(dtype)
    dst, src = xp.asarray(a), xp.asarray(b)
    kernels.reduce_into(dst, src, op)
    same_bits(to_host(dst), want)
    same_bits(to_host(src), b)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_reduce_into_propagates_nan(xp, dtype, op):
    a = np.array([np.nan, 1, 2, np.nan, np.inf], dtype)
    b = np.array([1, np.nan, 3, np.nan, -np.inf], dtype)
    dst = xp.asarray(a)
    kernels.reduce_into(dst, xp.asarray(b), op)
    want = {
        "sum": [np.nan, np.nan, 5, np.nan, np.nan],
        "max": [np.nan, np.nan, 3, np.nan, np.inf],
        "min": [np.nan, np.nan, 2, np.nan, -np.inf],
    }[op]
    np.testing.assert_array_equal(to_host(dst).astype(np.float64), want)


def test_reduce_into_rejects_unknown_op():
    with pytest.raises(ValueError, match="op must be one of"):
        kernels.reduce_into(np.ones(3), np.ones(3), "prod")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_copy_into(xp, dtype, n):
    a = random_array(n, dtype, 3)
    dst = xp.asarray(np.zeros(n, dtype))
    kernels.copy_into(dst, xp.asarray(a))
    same_bits(to_host(dst), a)


@pytest.mark.parametrize("divisor", [1, 3, 7, 257, 4099])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_divide_into(xp, dtype, n, divisor):
    a = random_array(n, dtype, 4)
    if dtype.kind == "i":
        want = np.array([int(v) // divisor for v in a[:1000]] + list(a[1000:] // divisor), dtype)
    else:
        want = rounded(a.astype(np.float64) / divisor, dtype)
    buf = xp.asarray(a)
    kernels.divide_into(buf, divisor)
    same_bits(to_host(buf), want)


def test_array_module_is_numpy_for_numpy_arrays():
    assert kernels.array_module(np.ones(1)) is np
