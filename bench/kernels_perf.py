"""Bandwidth of each local kernel beside a plain copy, per size: ``python -m bench.kernels_perf``.

Every row is one payload size (bytes of float32 gradient, so all kernels of a row work on
the same element count). Every kernel's GB/s counts the bytes it reads plus the bytes it
writes, like the copy's, so a kernel at the copy's GB/s runs at memory speed. Runs on the
GPU with CuPy (timed with CUDA events) when one is present, else on the CPU with NumPy.

Example::

    python -m bench.kernels_perf --min-bytes 1M --max-bytes 64M
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import ml_dtypes
import numpy as np

import kernels
from bench.harness import format_size, parse_size, size_steps

__all__ = ["CASES", "Case", "main", "measure"]

Setup = Callable[[ModuleType, int], Callable[[], None]]
F16, BF16, F32 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32)
TENSORS = 1000  # the pack/unpack cases split the payload into this many tensors


@dataclass(frozen=True)
class Case:
    """One table column: a kernel call on n elements, touching bytes_per_element * n bytes."""

    label: str
    bytes_per_element: int
    setup: Setup


def _ones(xp: ModuleType, n: int, dtype: np.dtype):
    return xp.asarray(np.ones(n, dtype)) if dtype == BF16 else xp.ones(n, dtype)


def _reduce(dtype: np.dtype, op: str) -> Setup:
    def setup(xp, n):
        dst, src = _ones(xp, n, dtype), _ones(xp, n, dtype)
        return lambda: kernels.reduce_into(dst, src, op)

    return setup


def _copy(xp, n):
    dst, src = _ones(xp, n, F32), _ones(xp, n, F32)
    return lambda: kernels.copy_into(dst, src)


def _compress(wire: np.dtype) -> Setup:
    def setup(xp, n):
        dst, src = _ones(xp, n, wire), _ones(xp, n, F32)
        return lambda: kernels.compress_into(dst, src, 0.5)

    return setup


def _decompress_reduce(wire: np.dtype) -> Setup:
    def setup(xp, n):
        acc, src = _ones(xp, n, F32), _ones(xp, n, wire)
        return lambda: kernels.decompress_reduce_into(acc, src, "sum")

    return setup


def _divide(xp, n):
    buf = _ones(xp, n, F32)
    return lambda: kernels.divide_into(buf, 3)


def _multi(direction: str) -> Setup:
    def setup(xp, n):
        sizes = np.diff(np.linspace(0, n, TENSORS + 1).astype(np.int64))
        tensors, flat = [_ones(xp, int(k), F32) for k in sizes], _ones(xp, n, F32)
        if direction == "pack":
            return lambda: kernels.pack(tensors, flat)
        return lambda: kernels.unpack(flat, tensors)

    return setup


CASES = (
    Case("copy f32", 8, _copy),
    Case("sum f32", 12, _reduce(F32, "sum")),
    Case("max f32", 12, _reduce(F32, "max")),
    Case("sum bf16", 6, _reduce(BF16, "sum")),
    Case("sum f16", 6, _reduce(F16, "sum")),
    Case("cmp bf16", 6, _compress(BF16)),
    Case("cmp f16", 6, _compress(F16)),
    Case("dred bf16", 10, _decompress_reduce(BF16)),
    Case("dred f16", 10, _decompress_reduce(F16)),
    Case("avg f32", 8, _divide),
    Case(f"pack {TENSORS}", 8, _multi("pack")),
    Case(f"unpack {TENSORS}", 8, _multi("unpack")),
)


def _batch_seconds(xp: ModuleType, call: Callable[[], None], reps: int) -> float:
    """Seconds for reps calls: wall clock on the CPU, CUDA events on the GPU."""
    if xp is np:
        t0 = time.perf_counter()
        for _ in range(reps):
            call()
        return time.perf_counter() - t0
    start, end = xp.cuda.Event(), xp.cuda.Event()
    start.record()
    for _ in range(reps):
        call()
    end.record()
    end.synchronize()
    return xp.cuda.get_elapsed_time(start, end) / 1e3


def measure(xp: ModuleType, call: Callable[[], None], *, min_seconds: float = 0.2) -> float:
    """Best seconds per call over batches (doubled until a batch takes min_seconds / 5)."""
    call()  # warm-up: compiles GPU kernels, faults pages in
    best, spent, reps = float("inf"), 0.0, 1
    while spent < min_seconds:
        seconds = _batch_seconds(xp, call, reps)
        best, spent = min(best, seconds / reps), spent + seconds
        if seconds < min_seconds / 5:
            reps *= 2
    return best


def _gpu() -> ModuleType | None:
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # no cupy, no driver or no device: the CPU runs it
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels_perf", description=__doc__.split("\n")[0])
    parser.add_argument("-b", "--min-bytes", type=parse_size, default=1 << 20, help="smallest payload (1M)")
    parser.add_argument("-e", "--max-bytes", type=parse_size, default=1 << 30, help="largest payload (1G)")
    parser.add_argument("-f", "--factor", type=int, default=4, help="size step factor (4)")
    parser.add_argument("--cpu", action="store_true", help="NumPy on the CPU even when a GPU is present")
    parser.add_argument("--cases", default="", help="comma-separated column labels to run (all)")
    args = parser.parse_args(argv)
    xp = np if args.cpu else (_gpu() or np)
    cases = [c for c in CASES if not args.cases or c.label in args.cases.split(",")]
    device = "CPU, NumPy " + np.__version__ if xp is np else "GPU, CuPy " + xp.__version__
    print(f"# kernels_perf on {device}: GB/s of bytes read + written (best of batches)")
    print(f"{'size':>9}" + "".join(f"{c.label:>12}" for c in cases), flush=True)
    for size in size_steps(min_bytes=args.min_bytes, max_bytes=args.max_bytes, factor=args.factor):
        n = size // 4
        cells = []
        for case in cases:
            seconds = measure(xp, case.setup(xp, n))
            cells.append(f"{case.bytes_per_element * n / seconds / 1e9:>12.2f}")
        print(f"{format_size(size):>9}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
