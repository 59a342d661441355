"""Bandwidth of each local kernel beside a plain copy, per size: ``python -m bench.kernels_perf``.

Every row is one payload size (bytes of float32 gradient, so all kernels of a row work on
the same element count). Every kernel's GB/s counts the bytes it reads plus the bytes it
writes, like the copy's, so a kernel at the copy's GB/s runs at memory speed. Runs on the
GPU with CuPy (timed with CUDA events) when one is present, else on the CPU with NumPy.

``--codec`` prints the fp16/bf16 codec table instead, on the CPU: each step a compressed
all-reduce takes per hop (compress, the fused encode, decode, decode-sum) through the
compiled codec (per instruction set), the old NumPy path and torch's casts (one thread),
beside a float32 memcpy and add of the same bytes; GB/s of float32 bytes in (n * 4 / the
median time of a call) and microseconds per call.

Example::

    python -m bench.kernels_perf --min-bytes 1M --max-bytes 64M
    python -m bench.kernels_perf --codec --sizes 1K,64K,1M,16M,64M --isas avx512,avx2,portable
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import ml_dtypes
import numpy as np

import kernels
from bench.arguments import positive_int, size_list
from bench.harness import format_size, parse_size, size_steps

__all__ = ["CASES", "CODEC_STEPS", "Case", "CodecRow", "codec_rows", "main", "measure", "median_seconds"]

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


def _encode(wire: np.dtype) -> Setup:
    def setup(xp, n):
        dst, src = _ones(xp, n, wire), _ones(xp, n, F32)
        return lambda: kernels.encode_into(dst, src)

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
    Case("enc bf16", 10, _encode(BF16)),
    Case("enc f16", 10, _encode(F16)),
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


def median_seconds(call: Callable[[], None], *, batches: int = 5, batch_seconds: float = 0.02) -> float:
    """Median seconds per call (CPU wall clock) over batches of at least batch_seconds each."""
    call()  # warm-up: faults pages in
    reps = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            call()
        if time.perf_counter() - t0 >= batch_seconds:
            break
        reps *= 2
    samples = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(reps):
            call()
        samples.append((time.perf_counter() - t0) / reps)
    return statistics.median(samples)


# ---------------------------------------------------------------------------- the codec table

CODEC_STEPS = ("compress", "encode", "decode", "decode-sum")
WIRES = {"fp16": F16, "bf16": BF16}


@dataclass(frozen=True)
class CodecRow:
    """One row of the codec table: one implementation of one step, set up for n elements."""

    step: str
    wire: str
    impl: str
    setup: Callable[[int], Callable[[], None]]
    isa: str | None = None  # the codec's instruction set to run it with


def _gradient(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(n).astype(F32)


def _kernels_step(module: ModuleType, step: str, wire: np.dtype) -> Callable[[int], Callable[[], None]]:
    """A step through a kernels twin: `kernels` (the codec) or `kernels._numpy` (the old path)."""

    def setup(n: int) -> Callable[[], None]:
        x, half, acc = _gradient(n), np.empty(n, wire), np.ones(n, F32)
        module.compress_into(half, x, 1.0)
        return {
            "compress": lambda: module.compress_into(half, x, 1.0),
            "encode": lambda: module.encode_into(half, x),
            "decode": lambda: module.decompress_into(acc, half),
            "decode-sum": lambda: module.decompress_reduce_into(acc, half, "sum"),
        }[step]

    return setup


def _torch_step(step: str, wire: str, *, allocate: bool = False) -> Callable[[int], Callable[[], None]]:
    """A step with torch's casts on one thread: in place (copy_, add_), or `.to()` (allocates)."""

    def setup(n: int) -> Callable[[], None]:
        import torch

        torch.set_num_threads(1)
        half_type = torch.float16 if wire == "fp16" else torch.bfloat16
        x, acc = torch.from_numpy(_gradient(n)), torch.ones(n)
        half = x.to(half_type)
        if allocate:
            return {"compress": lambda: x.to(half_type), "decode": lambda: half.to(torch.float32)}[step]
        return {
            "compress": lambda: half.copy_(x),
            "encode": lambda: (half.copy_(x), x.copy_(half)),
            "decode": lambda: acc.copy_(half),
            "decode-sum": lambda: acc.add_(half),
        }[step]

    return setup


def _memcpy(n: int) -> Callable[[], None]:
    src, dst = _gradient(n), np.empty(n, F32)
    return lambda: np.copyto(dst, src)


def _add(n: int) -> Callable[[], None]:
    src, acc = _gradient(n), np.ones(n, F32)
    return lambda: np.add(acc, src, out=acc)


def _torch_present() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def codec_rows(isas: list[str], *, torch: bool = True) -> list[CodecRow]:
    """The table's rows: the memory-speed references, then per wire and step each implementation."""
    rows = [CodecRow("memcpy f32", "", "numpy", _memcpy), CodecRow("add f32", "", "numpy", _add)]
    for wire, dtype in WIRES.items():
        for step in CODEC_STEPS:
            rows += [CodecRow(step, wire, f"codec {isa}", _kernels_step(kernels, step, dtype), isa) for isa in isas]
            rows.append(CodecRow(step, wire, "numpy (old)", _kernels_step(kernels._numpy, step, dtype)))
            if torch:
                rows.append(CodecRow(step, wire, "torch", _torch_step(step, wire)))
                if step in ("compress", "decode"):
                    rows.append(CodecRow(step, wire, "torch .to()", _torch_step(step, wire, allocate=True)))
    return rows


def _codec_seconds(rows: list[CodecRow], sizes: list[int], runs: int) -> dict[tuple[int, int], float]:
    """Median seconds per call of every (row, size): all rows at each size, runs times round-robin."""
    from kernels import _codec

    samples: dict[tuple[int, int], list[float]] = {}
    for _ in range(runs):
        for size in sizes:
            for r, row in enumerate(rows):
                previous = _codec.use(row.isa) if row.isa else None
                try:
                    samples.setdefault((r, size), []).append(median_seconds(row.setup(size // 4)))
                finally:
                    if previous:
                        _codec.use(previous)
    return {key: statistics.median(values) for key, values in samples.items()}


def _print_codec_tables(rows: list[CodecRow], sizes: list[int], runs: int) -> None:
    seconds = _codec_seconds(rows, sizes, runs)
    versions = f"NumPy {np.__version__}, ml_dtypes {ml_dtypes.__version__}"
    if any(row.impl.startswith("torch") for row in rows):
        import torch

        versions += f", torch {torch.__version__}"
    print(f"# kernels_perf --codec on {platform.machine()} ({versions}), one thread, "
          f"median of {runs} run(s) x 5 batches; codec backend now: {kernels.cpu_backend()}")
    for title, cell in (
        ("GB/s of float32 bytes in (n * 4 / time per call)", lambda size, t: f"{size / t / 1e9:>9.2f}"),
        ("microseconds per call", lambda size, t: f"{t * 1e6:>9.1f}"),
    ):
        print(f"\n## {title}")
        print(f"{'step':<11}{'wire':<6}{'impl':<16}" + "".join(f"{format_size(s):>9}" for s in sizes))
        for r, row in enumerate(rows):
            cells = "".join(cell(size, seconds[r, size]) for size in sizes)
            print(f"{row.step:<11}{row.wire:<6}{row.impl:<16}{cells}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels_perf", description=__doc__.split("\n")[0])
    parser.add_argument("-b", "--min-bytes", type=parse_size, default=1 << 20, help="smallest payload (1M)")
    parser.add_argument("-e", "--max-bytes", type=parse_size, default=1 << 30, help="largest payload (1G)")
    parser.add_argument("-f", "--factor", type=int, default=4, help="size step factor (4)")
    parser.add_argument("--cpu", action="store_true", help="NumPy on the CPU even when a GPU is present")
    parser.add_argument("--cases", default="", help="comma-separated column labels to run (all)")
    parser.add_argument("--codec", action="store_true", help="the fp16/bf16 codec table (CPU) instead")
    parser.add_argument("--sizes", type=size_list, default="1K,64K,1M,16M,64M",
                        help="--codec: payload sizes (1K,64K,1M,16M,64M)")
    parser.add_argument("--isas", default="", help="--codec: the codec's instruction sets to run (the active one)")
    parser.add_argument("--runs", type=positive_int, default=1,
                        help="--codec: round-robin runs to take the median of (1)")
    parser.add_argument("--no-torch", action="store_true", help="--codec: leave torch's rows out")
    args = parser.parse_args(argv)
    if args.codec:  # (it takes --sizes: -b, -e and -f are not its own)
        isas = args.isas.split(",") if args.isas else [kernels.cpu_backend()]
        if isas == ["numpy"]:
            isas = []  # no compiled codec: the table shows the NumPy path beside torch and memcpy
        rows = codec_rows(isas, torch=not args.no_torch and _torch_present())
        _print_codec_tables(rows, list(args.sizes), args.runs)
        return
    try:
        sizes = size_steps(min_bytes=args.min_bytes, max_bytes=args.max_bytes, factor=args.factor)
    except ValueError as error:
        parser.error(str(error))
    xp = np if args.cpu else (kernels.gpu_module() or np)
    cases = [c for c in CASES if not args.cases or c.label in args.cases.split(",")]
    device = "CPU, NumPy " + np.__version__ if xp is np else "GPU, CuPy " + xp.__version__
    print(f"# kernels_perf on {device}: GB/s of bytes read + written (best of batches)")
    print(f"{'size':>9}" + "".join(f"{c.label:>12}" for c in cases), flush=True)
    for size in sizes:
        n = size // 4
        cells = []
        for case in cases:
            seconds = measure(xp, case.setup(xp, n))
            cells.append(f"{case.bytes_per_element * n / seconds / 1e9:>12.2f}")
        print(f"{format_size(size):>9}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
