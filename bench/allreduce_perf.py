"""collectives-bench: all-reduce time and bandwidth per message size and algorithm.

The all-reduce's part of the harness contract (like nccl-tests' ``src/all_reduce.cu``):
bytes -> count, deterministic data and its NumPy reference, the bus bandwidth factor
2(p-1)/p, and the call ``comm.allreduce(x, op=..., algorithm=..., out=...)``. The
harness (:mod:`bench.harness`) does the rest.

Example::

    collectives-bench -b 8 -e 256M -f 2 --algorithms ring,native      # starts 2 ranks itself
    collectives-bench --device gpu --transport nccl --np 1 -b 1M -e 1G -f 4
    mpiexec -n 8 python -m bench.allreduce_perf -b 1M -e 64M -f 4 --json out.json
    collectives-bench -b 1M -e 64M -f 4 --algorithms ring --compression none,fp16,bf16
    collectives-bench --tensors 1000 -b 8M -e 8M --algorithms auto     # fusion: many/loop/flat
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from bench import harness, launch

__all__ = ["DTYPES", "REDOPS", "TENSOR_MODES", "AlgorithmVariant", "AllReduce", "AllReduceSample",
           "TensorsSample", "main", "tensor_bounds"]

_MODULE = "bench.allreduce_perf"
DTYPES = {
    "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32), "float64": np.dtype(np.float64),
    "int32": np.dtype(np.int32), "int64": np.dtype(np.int64),
}
# nccl-tests' type names for the same dtypes.
_DTYPE_ALIASES = {"half": "float16", "float": "float32", "double": "float64"}
REDOPS = ("sum", "avg", "max", "min")

# Every element gets one of _CODES values per rank, picked by a multiplicative hash of its
# index (Knuth's 2654435761): never periodic in the sizes we sweep, so a segment sent to
# the wrong offset is caught, yet the reference is a table of _CODES entries.
_CODES = 16
_HASH = np.uint32(2654435761)
_CHUNK = 1 << 20  # elements per step of the streamed init and check
# Machine epsilon of each --compression wire format.
_WIRE_EPS = {"fp16": float(ml_dtypes.finfo(np.float16).eps),
             "bf16": float(ml_dtypes.finfo(ml_dtypes.bfloat16).eps)}


# --tensors modes: one allreduce_many call, one allreduce per tensor, one flat all-reduce.
TENSOR_MODES = ("many", "loop", "flat")


@dataclass(frozen=True)
class AlgorithmVariant:
    """A column group: one all-reduce algorithm, maybe compressed, maybe a --tensors mode."""

    algorithm: str
    compression: str | None = None
    mode: str | None = None  # None: one all-reduce of the vector; else one of TENSOR_MODES

    @property
    def label(self) -> str:
        """``ring``, ``ring+fp16``, ``many ring``."""
        name = self.algorithm + (f"+{self.compression}" if self.compression else "")
        return name if self.mode is None else f"{self.mode} {name}"

    def fields(self) -> Mapping[str, object]:
        """``{"algorithm": name, "compression": ...}`` (and ``mode``) for the JSON rows."""
        fields = {"algorithm": self.algorithm, "compression": self.compression}
        return fields if self.mode is None else {**fields, "mode": self.mode}


def element_codes(count: int) -> np.ndarray:
    """Per-element codes in [0, 16): the top 4 bits of ``index * 2654435761 mod 2**32``."""
    codes = np.empty(count, np.uint8)
    for lo in range(0, count, _CHUNK):
        index = np.arange(lo, min(lo + _CHUNK, count), dtype=np.uint32)
        codes[lo:lo + index.size] = (index * _HASH) >> np.uint32(28)
    return codes


def value_table(nranks: int, *, integer: bool) -> np.ndarray:
    """``table[rank, code]``: the value each rank contributes for each code.

    Integers in [-8, 8] (quarters of them for floats): sums fit an int32 up to millions
    of ranks, and stay exact in float16 up to 256 ranks and in bfloat16 up to 32.
    """
    rank = np.arange(nranks)[:, None]
    code = np.arange(_CODES)[None, :]
    values = (5 * code + 3 * rank + (code * rank) % 7) % 17 - 8
    return values if integer else values / 4


def reference(table: np.ndarray, redop: str, *, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(expected, tolerance) per code for ``redop`` over the ranks of ``table``.

    Max and min are exact, and so is everything on integers (avg rounds down, as the
    library does). A float sum may round at each of its p-1 additions, by at most
    eps/2 of the partial sum, itself at most sum(|x|) — in any order the algorithm adds —
    and the result once more when it is stored (or divided, for avg).
    """
    nranks = table.shape[0]
    zero = np.zeros(_CODES)
    if redop == "max":
        return table.max(axis=0), zero
    if redop == "min":
        return table.min(axis=0), zero
    total = table.sum(axis=0)
    divisor = nranks if redop == "avg" else 1
    if table.dtype.kind == "i":
        return total // divisor, zero
    expected = total / divisor
    tolerance = eps * ((nranks - 1) / 2 * np.abs(table).sum(axis=0) / divisor + np.abs(expected))
    return expected, tolerance


class AllReduceSample:
    """Input, output and reference of one all-reduce size on this rank."""

    def __init__(self, comm: Any, *, count: int, dtype: np.dtype, redop: str) -> None:
        table = value_table(comm.size, integer=dtype.kind == "i")
        self._comm = comm
        self._redop = redop
        self._codes = element_codes(count)
        self._x = np.take(table[comm.rank].astype(dtype), self._codes)
        self._out = np.empty_like(self._x)
        eps = float(ml_dtypes.finfo(dtype).eps) if dtype.kind != "i" else 0.0
        self._expected, self._tolerance = reference(table, redop, eps=eps)
        # A compressed sum rounds to 16 bits at every hop, and once more at the end.
        self._compressed = {name: reference(table, redop, eps=2 * max(eps, _WIRE_EPS[name]))[1]
                            for name in _WIRE_EPS} if dtype.kind != "i" else {}

    @property
    def nbytes(self) -> int:
        """Bytes of the reduced vector."""
        return self._x.nbytes

    def run(self, variant: AlgorithmVariant) -> None:
        """One all-reduce into the preallocated output."""
        compressed = {} if variant.compression is None else {"compression": variant.compression}
        self._comm.allreduce(self._x, op=self._redop, algorithm=variant.algorithm, out=self._out,
                             **compressed)

    def wrong(self, variant: AlgorithmVariant) -> int:
        """Output elements off the reference by more than the tolerance (NaN and inf included)."""
        bad = 0
        out = self.result()
        tolerance = self._compressed.get(variant.compression, self._tolerance)
        for lo in range(0, self._codes.size, _CHUNK):
            codes = self._codes[lo:lo + _CHUNK]
            got = out[lo:lo + _CHUNK].astype(self._expected.dtype)
            error = np.abs(got - self._expected[codes])
            bad += int(np.count_nonzero(~(error <= tolerance[codes])))
        return bad

    def result(self) -> np.ndarray:
        """The output vector."""
        return self._out


class DeviceAllReduceSample(AllReduceSample):
    """The same sample with input and output in GPU memory (CuPy), for ``--device gpu``."""

    def __init__(self, comm: Any, *, count: int, dtype: np.dtype, redop: str) -> None:
        import cupy

        super().__init__(comm, count=count, dtype=dtype, redop=redop)
        self._cupy = cupy
        self._x = cupy.asarray(self._x)
        self._out = cupy.empty_like(self._x)

    def result(self) -> np.ndarray:
        """The output, copied to the host."""
        return self._cupy.asnumpy(self._out)

    def synchronize(self) -> None:
        """Wait for the all-reduces launched on the current stream (the harness's clock)."""
        self._cupy.cuda.get_current_stream().synchronize()


class TensorsSample(AllReduceSample):
    """The same vector cut into ``tensors`` arrays of uneven sizes, for ``--tensors N``.

    Sizes are drawn uniformly from 1 .. 2m-1 elements (m = count / tensors, fixed seed),
    then scaled to add up to count. Each mode returns new arrays, as a caller would get:
    ``many`` one allreduce_many, ``loop`` one allreduce per array, ``flat`` one allreduce
    of the whole vector (the bytes without the tensor boundaries).
    """

    def __init__(self, comm: Any, *, count: int, dtype: np.dtype, redop: str,
                 tensors: int) -> None:
        super().__init__(comm, count=count, dtype=dtype, redop=redop)
        bounds = tensor_bounds(count, tensors)
        self._tensors = [self._x[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
        self._results: list[np.ndarray] = []

    def run(self, variant: AlgorithmVariant) -> None:
        """The variant's mode, once."""
        options = {"op": self._redop, "algorithm": variant.algorithm,
                   "compression": variant.compression}
        if variant.mode == "many":
            self._results = self._comm.allreduce_many(self._tensors, **options)
        elif variant.mode == "loop":
            self._results = [self._comm.allreduce(x, **options) for x in self._tensors]
        else:
            self._results = [self._comm.allreduce(self._x, **options)]

    def result(self) -> np.ndarray:
        """The results of the last run, end to end."""
        return np.concatenate([r.reshape(-1) for r in self._results])


def tensor_bounds(count: int, tensors: int) -> list[int]:
    """Offsets [0, ..., count] of ``tensors`` uneven non-empty pieces (see TensorsSample).

    >>> tensor_bounds(10, 3)[0], tensor_bounds(10, 3)[-1], len(tensor_bounds(10, 3))
    (0, 10, 4)
    """
    mean = count / tensors
    draws = np.random.default_rng(0).integers(1, max(2, round(2 * mean)), tensors)
    sizes = np.maximum(1, np.floor(draws * (count / draws.sum())).astype(np.int64))
    sizes[np.argmax(sizes)] += count - sizes.sum()
    return [0, *np.cumsum(sizes).tolist()]


class AllReduce:
    """The all-reduce as a harness op: one variant per algorithm (x compression, x mode)."""

    name = "allreduce"

    def __init__(self, comm: Any, *, dtype: np.dtype, redop: str,
                 algorithms: Sequence[str], device: str = "cpu",
                 compressions: Sequence[str | None] = (None,), tensors: int | None = None) -> None:
        self._comm = comm
        self._sample = DeviceAllReduceSample if device == "gpu" else AllReduceSample
        self._dtype = dtype
        self._redop = redop
        self._tensors = tensors
        modes = (None,) if tensors is None else TENSOR_MODES
        self._variants = tuple(AlgorithmVariant(name, compression, mode)
                               for name in algorithms for compression in compressions
                               for mode in modes)

    def variants(self) -> Sequence[AlgorithmVariant]:
        """One per algorithm x compression (x --tensors mode), in the order given."""
        return self._variants

    def fields(self) -> Mapping[str, object]:
        """The element type and reduction of every row."""
        return {"type": self._dtype.name, "redop": self._redop}

    def bus_factor(self, nranks: int) -> float:
        """2(p-1)/p: each rank sends (and receives) that share of the vector, at best."""
        return 2 * (nranks - 1) / nranks

    def count(self, nbytes: int) -> int:
        """Whole elements in ``nbytes`` (0, skipped, when fewer than one per tensor)."""
        count = nbytes // self._dtype.itemsize
        return count if self._tensors is None or count >= self._tensors else 0

    def setup(self, count: int) -> AllReduceSample:
        """Buffers and reference for ``count`` elements."""
        if self._tensors is not None:
            return TensorsSample(self._comm, count=count, dtype=self._dtype, redop=self._redop,
                                 tensors=self._tensors)
        return self._sample(self._comm, count=count, dtype=self._dtype, redop=self._redop)


def _dtype(text: str) -> str:
    """A dtype name from the command line (nccl-tests' half/float/double too)."""
    name = _DTYPE_ALIASES.get(text, text)
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(
            f"unknown dtype {text!r}; choose from {', '.join(DTYPES)}")
    return name


def build_parser() -> argparse.ArgumentParser:
    """The command line: nccl-tests' flags plus algorithms, dtype, op and --np."""
    parser = argparse.ArgumentParser(
        prog="collectives-bench",
        description="All-reduce time, algbw, busbw and #wrong per size and algorithm "
                    "(like nccl-tests' all_reduce_perf).")
    harness.add_sweep_arguments(parser)
    parser.add_argument("--algorithms", default="ring,native", metavar="A,B",
                        help="comma-separated collectives.ALGORITHMS, or 'all' "
                             "(default ring,native)")
    parser.add_argument("-d", "--dtype", type=_dtype, default="float32",
                        help=f"element type: {', '.join(DTYPES)} (default float32)")
    parser.add_argument("-o", "--op", choices=REDOPS, default="sum",
                        help="reduction (default sum)")
    parser.add_argument("--compression", type=_compressions, default=(None,), metavar="C,C",
                        help="wire compressions to measure, each a column group per "
                             "algorithm: none, fp16, bf16 (default none)")
    parser.add_argument("--tensors", type=int, default=None, metavar="N",
                        help="fusion mode: cut each size into N uneven arrays and compare "
                             "allreduce_many (many), one call per array (loop) and one "
                             "all-reduce of the same bytes (flat)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="where the buffers live: NumPy (cpu) or CuPy (gpu, GPU = "
                             "node-local rank); default cpu")
    parser.add_argument("--transport", choices=("mpi", "nccl", "auto"), default="mpi",
                        help="collectives.init(transport=...): what moves CuPy arrays "
                             "(default mpi; nccl makes 'native' NCCL's all-reduce)")
    parser.add_argument("--calibrate", action="store_true",
                        help="instead of the sweep, fit the cost model (alpha, beta, gamma, "
                             "native's times) at this np and write the tuning file that "
                             "algorithm='auto' reads (bench/calibrate.py)")
    parser.add_argument("--quick", action="store_true",
                        help="with --calibrate: fewer sizes")
    launch.add_launch_argument(parser)
    launch.add_lab_arguments(parser)
    return parser


def _algorithms(text: str, known: Sequence[str]) -> tuple[str, ...]:
    """The algorithms asked for, checked against the library's list."""
    names = tuple(known) if text == "all" else tuple(name for name in text.split(",") if name)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"unknown algorithms: {', '.join(unknown) or repr(text)}; "
                         f"choose from {', '.join(known)} or 'all'")
    return names


def _compressions(text: str) -> tuple[str | None, ...]:
    """``none,fp16`` as (None, "fp16")."""
    names = tuple(None if name == "none" else name for name in text.split(",") if name)
    unknown = [name for name in names if name not in (None, *_WIRE_EPS)]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown compression {', '.join(map(str, unknown)) or repr(text)}; "
            f"choose from none, {', '.join(_WIRE_EPS)}")
    return names


def _use_local_gpu(mpi_comm: Any) -> None:
    """Make GPU (node-local rank mod GPUs) current, as the NCCL transport would pick it."""
    import cupy
    from mpi4py import MPI

    node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    cupy.cuda.Device(node.rank % cupy.cuda.runtime.getDeviceCount()).use()
    node.Free()


def _baseline(op: AllReduce, algorithms: Sequence[str]) -> str | None:
    """The label ratios are taken against: the flat all-reduce in --tensors mode, else native."""
    labels = [variant.label for variant in op.variants()]
    wanted = f"flat {algorithms[0]}" if op.variants()[0].mode is not None else "native"
    return wanted if wanted in labels else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every check passed, 1 when some element was wrong."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = harness.sweep_options(args)
    except ValueError as error:
        parser.error(str(error))
    if args.dtype.startswith("int") and args.compression != (None,):
        parser.error(f"--compression needs a floating-point --dtype, got {args.dtype}")
    if args.tensors is not None and args.tensors < 1:
        parser.error(f"--tensors must be at least 1, got {args.tensors}")
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np,
                           lab=launch.lab_request(parser, args))

    from mpi4py import MPI

    import collectives

    mpi_comm = MPI.COMM_WORLD
    leader = mpi_comm.rank == 0
    if args.calibrate:
        from bench import calibrate

        with harness.abort_on_error(mpi_comm):
            calibrate.run(mpi_comm, quick=args.quick)
        return 0
    try:
        algorithms = _algorithms(args.algorithms, collectives.ALGORITHMS)
    except ValueError as error:
        if leader:
            parser.error(str(error))
        return 2
    with harness.abort_on_error(mpi_comm):
        if args.device == "gpu":
            _use_local_gpu(mpi_comm)
        # The library's default transport is "mpi"; name it only when another is asked for.
        chosen = {} if args.transport == "mpi" else {"transport": args.transport}
        op = AllReduce(collectives.init(mpi_comm=mpi_comm, **chosen),
                       dtype=DTYPES[args.dtype], redop=args.op, algorithms=algorithms,
                       device=args.device, compressions=args.compression, tensors=args.tensors)
        redraw = sys.stderr.isatty() or os.environ.get(launch.PROGRESS_TTY) == "1"
        rows = harness.run(
            mpi_comm, op, options=options,
            command=shlex.join(["collectives-bench", *argv]),
            config={"collective": op.name, "dtype": args.dtype, "op": args.op,
                    "device": args.device, "transport": args.transport,
                    "compression": ",".join(c or "none" for c in args.compression),
                    **({} if args.tensors is None else {"tensors": args.tensors}),
                    "iters": options.iters, "warmup": options.warmup, "check": args.check},
            baseline=_baseline(op, algorithms), json_path=args.json,
            env=harness.environment(
                mpi_comm, collectives=getattr(collectives, "__version__", "unknown")),
            progress=harness.Progress(stream=sys.stderr, redraw=redraw))
    return 1 if any(row.wrong for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
