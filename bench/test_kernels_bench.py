"""Micro-benchmarks of the local kernels: ``pytest bench/ --benchmark-only``.

Not collected by a plain ``pytest`` (testpaths is ``tests``). Runs on NumPy, and on CuPy
too when a GPU is present (each call then synchronizes, so the time is the kernel's).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import kernels

F16, BF16, F32 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32)
SIZES = [1 << 10, 1 << 18, 1 << 22]  # elements: 4 KiB, 1 MiB, 16 MiB of float32
TENSORS = 1000


@pytest.fixture(
    params=["numpy", pytest.param("cupy", marks=pytest.mark.skipif(kernels.gpu_module() is None, reason="needs a GPU"))]
)
def xp(request):
    if request.param == "numpy":
        return np
    import cupy

    return cupy


def timed(benchmark, xp, call) -> None:
    """Benchmark call, waiting for the GPU inside the timed region when there is one."""
    if xp is np:
        benchmark(call)
    else:
        sync = xp.cuda.get_current_stream().synchronize
        benchmark(lambda: (call(), sync()))


def ones(xp, n: int, dtype: np.dtype):
    return xp.asarray(np.ones(n, dtype))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [F32, BF16, F16], ids=str)
@pytest.mark.parametrize("op", ["sum", "max"])
def test_reduce_into(benchmark, xp, op, dtype, n):
    dst, src = ones(xp, n, dtype), ones(xp, n, dtype)
    timed(benchmark, xp, lambda: kernels.reduce_into(dst, src, op))


@pytest.mark.parametrize("n", SIZES)
def test_copy_into(benchmark, xp, n):
    dst, src = ones(xp, n, F32), ones(xp, n, F32)
    timed(benchmark, xp, lambda: kernels.copy_into(dst, src))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("wire", [BF16, F16], ids=str)
def test_compress_into(benchmark, xp, wire, n):
    dst, src = ones(xp, n, wire), ones(xp, n, F32)
    timed(benchmark, xp, lambda: kernels.compress_into(dst, src, 0.5))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("wire", [BF16, F16], ids=str)
def test_decompress_reduce_into(benchmark, xp, wire, n):
    acc, src = ones(xp, n, F32), ones(xp, n, wire)
    timed(benchmark, xp, lambda: kernels.decompress_reduce_into(acc, src, "sum"))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("wire", [BF16, F16], ids=str)
def test_encode_into(benchmark, xp, wire, n):
    """Quantize on send in one pass (the codec); the two-pass way it replaces is below."""
    wire_buf, work = ones(xp, n, wire), ones(xp, n, F32)
    timed(benchmark, xp, lambda: kernels.encode_into(wire_buf, work))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("wire", [BF16, F16], ids=str)
def test_encode_as_compress_then_decompress(benchmark, xp, wire, n):
    wire_buf, work = ones(xp, n, wire), ones(xp, n, F32)
    timed(benchmark, xp, lambda: (kernels.compress_into(wire_buf, work, 1.0), kernels.decompress_into(work, wire_buf)))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("wire", [BF16, F16], ids=str)
def test_compress_into_numpy_twin(benchmark, wire, n):
    """The NumPy twin (the path without the compiled codec), for comparison on the CPU."""
    dst, src = ones(np, n, wire), ones(np, n, F32)
    benchmark(lambda: kernels._numpy.compress_into(dst, src, 0.5))


@pytest.fixture(params=[16, 1024], ids=lambda k: f"{k}-per-tensor")
def tensors(request, xp):
    """TENSORS small float32 tensors of request.param elements each, and a flat buffer."""
    arrays = [ones(xp, request.param, F32).reshape(-1, 4) for _ in range(TENSORS)]
    return arrays, ones(xp, request.param * TENSORS, F32)


def test_pack(benchmark, xp, tensors):
    arrays, flat = tensors
    timed(benchmark, xp, lambda: kernels.pack(arrays, flat))


def test_pack_python_loop(benchmark, xp, tensors):
    """The baseline pack replaces: one slice assignment per tensor."""
    arrays, flat = tensors

    def loop():
        lo = 0
        for a in arrays:
            flat[lo : lo + a.size] = a.ravel()
            lo += a.size

    timed(benchmark, xp, loop)


def test_unpack(benchmark, xp, tensors):
    arrays, flat = tensors
    timed(benchmark, xp, lambda: kernels.unpack(flat, arrays))


def test_unpack_python_loop(benchmark, xp, tensors):
    """The baseline unpack replaces: one reshaped slice copy per tensor."""
    arrays, flat = tensors

    def loop():
        lo = 0
        for a in arrays:
            a[...] = flat[lo : lo + a.size].reshape(a.shape)
            lo += a.size

    timed(benchmark, xp, loop)
