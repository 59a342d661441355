"""The all-reduce as a harness op (nccl-tests' ``src/all_reduce.cu``): the one used by
collectives-bench, collectives-report and bench/shm_perf.

- size: bytes of the vector each rank contributes; count = size / element size;
- data: :mod:`bench.reference`'s hashed codes, each rank's row of the value table;
- check: the closed-form reduction, within the dtype's (or the wire format's) rounding;
- bus factor: 2(p-1)/p; each node's link carries 2(q-1)/q of the vector at best;
- the call: ``MPI_Allreduce`` through mpi4py (``mpi``, the baseline) or
  ``comm.allreduce(x, op=..., algorithm=..., compression=..., out=...)``.

With ``tensors=N`` each size is cut into N uneven arrays, and every algorithm runs three
ways: ``allreduce_many`` (many), one call per array (loop) and one call of the whole
vector (flat).

Example::

    op = AllReduce(comm, mpi_comm, dtype=np.dtype(np.float32), redop="sum",
                   algorithms=["ring", "native"])
    harness.run(mpi_comm, op, options=options, command="...", config={}, baseline="mpi")
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.ops.baseline import MPI_BASELINE, buffer, finish, reduction
from bench.prediction import AllReducePrices
from bench.reference import Expected, element_codes, inputs, poison, rounding_eps, value_table

__all__ = ["TENSOR_MODES", "AllReduce", "AllReduceSample", "AllReduceVariant",
           "DeviceAllReduceSample", "TensorsSample", "tensor_bounds"]

# --tensors modes: one allreduce_many call, one allreduce per tensor, one flat all-reduce.
TENSOR_MODES = ("many", "loop", "flat")


@dataclass(frozen=True)
class AllReduceVariant:
    """A column group: MPI's own all-reduce, or one algorithm of the library, maybe
    compressed, maybe a --tensors mode."""

    algorithm: str
    compression: str | None = None
    mode: str | None = None  # None: one all-reduce of the vector; else one of TENSOR_MODES
    deterministic: bool = False

    @property
    def label(self) -> str:
        """``mpi``, ``ring``, ``ring+fp16``, ``ring+det``, ``many ring``."""
        name = self.algorithm + (f"+{self.compression}" if self.compression else "") + \
            ("+det" if self.deterministic else "")
        return name if self.mode is None else f"{self.mode} {name}"

    def fields(self) -> Mapping[str, object]:
        """``{"algorithm": name, "compression": ...}`` (``mode``, ``deterministic``) for
        the JSON rows."""
        fields = {"algorithm": self.algorithm, "compression": self.compression}
        if self.deterministic:
            fields["deterministic"] = True
        return fields if self.mode is None else {**fields, "mode": self.mode}

    def options(self) -> dict[str, object]:
        """The library call's keyword arguments beside the op; deterministic is always
        given: under COLLECTIVES_DETERMINISTIC=1 a plain column ran the reproducible path
        under a plain label, priced as plain (the 100th review)."""
        return {"algorithm": self.algorithm, "compression": self.compression,
                "deterministic": self.deterministic}


class AllReduceSample:
    """Input, output and reference of one all-reduce size on this rank."""

    def __init__(self, comm: Any, mpi_comm: Any, *, count: int, dtype: np.dtype,
                 redop: str) -> None:
        table = value_table(comm.size, integer=dtype.kind == "i")
        self._comm = comm
        self._mpi_comm = mpi_comm
        self._redop = redop
        self._codes = element_codes(count)
        self._x = inputs(table, rank=comm.rank, codes=self._codes, dtype=dtype)
        self._out = np.empty_like(self._x)
        self._expected = {compression: Expected.reduction(
            table, redop, eps=rounding_eps(dtype, compression))
            for compression in ((None, "fp16", "bf16", "auto") if dtype.kind != "i" else (None,))}

    @property
    def nbytes(self) -> int:
        """Bytes of the reduced vector."""
        return self._x.nbytes

    def run(self, variant: AllReduceVariant) -> None:
        """One all-reduce into the preallocated output."""
        if variant.algorithm == MPI_BASELINE:
            self._mpi_allreduce(self._out)
            return
        self._comm.allreduce(self._x, op=self._redop, out=self._out, **variant.options())

    def _mpi_allreduce(self, out: np.ndarray) -> None:
        """MPI_Allreduce of the input into ``out``, through mpi4py alone."""
        self._mpi_comm.Allreduce(buffer(self._x), buffer(out),
                                 op=reduction(self._x.dtype, self._redop))
        finish(out, self._redop, self._mpi_comm.size)

    def poison(self) -> None:
        """Fill the output with what no right result holds (before a checked turn)."""
        poison(self._out)

    def wrong(self, variant: AllReduceVariant) -> int:
        """Output elements off the reference by more than the tolerance (NaN and inf included)."""
        return self._expected[variant.compression].wrong(self.result(), self._codes)

    def result(self) -> np.ndarray:
        """The output vector."""
        return self._out


class DeviceAllReduceSample(AllReduceSample):
    """The same sample with input and output in GPU memory (CuPy), for ``--device gpu``."""

    def __init__(self, comm: Any, mpi_comm: Any, *, count: int, dtype: np.dtype,
                 redop: str) -> None:
        import cupy

        super().__init__(comm, mpi_comm, count=count, dtype=dtype, redop=redop)
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
    of the whole vector (the bytes without the tensor boundaries); ``mpi`` one
    MPI_Allreduce of the whole vector.
    """

    def __init__(self, comm: Any, mpi_comm: Any, *, count: int, dtype: np.dtype, redop: str,
                 tensors: int) -> None:
        super().__init__(comm, mpi_comm, count=count, dtype=dtype, redop=redop)
        bounds = tensor_bounds(count, tensors)
        self._tensors = [self._x[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
        self._results: list[np.ndarray] = []

    def run(self, variant: AllReduceVariant) -> None:
        """The variant's mode, once."""
        if variant.algorithm == MPI_BASELINE:
            self._mpi_allreduce(self._out)
            self._results = [self._out]
            return
        options = {"op": self._redop, **variant.options()}
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
    """The all-reduce as a harness op: MPI's own (with ``mpi_baseline``), then one variant
    per algorithm (x compression, x deterministic, x --tensors mode)."""

    name = "allreduce"
    replicated = True

    def __init__(self, comm: Any, mpi_comm: Any, *, dtype: np.dtype, redop: str,
                 algorithms: Sequence[str], mpi_baseline: bool = True, device: str = "cpu",
                 compressions: Sequence[str | None] = (None,),
                 tensors: int | None = None, deterministic: bool = False) -> None:
        if mpi_baseline and device != "cpu":
            raise ValueError("the mpi baseline reads host buffers: use it with device cpu")
        self._comm = comm
        self._mpi_comm = mpi_comm
        self._sample = DeviceAllReduceSample if device == "gpu" else AllReduceSample
        self._dtype = dtype
        self._redop = redop
        self._tensors = tensors
        self._prices = AllReducePrices(comm.tuner, itemsize=dtype.itemsize)
        modes = (None,) if tensors is None else TENSOR_MODES
        baseline = (AllReduceVariant(MPI_BASELINE),) if mpi_baseline else ()
        kinds = (False, True) if deterministic else (False,)
        self._variants = baseline + tuple(
            AllReduceVariant(name, compression, mode, kind)
            for name in algorithms for compression in compressions for kind in kinds
            for mode in modes)

    def variants(self) -> Sequence[AllReduceVariant]:
        """mpi first, then one per algorithm x compression (x its deterministic twin, x
        --tensors mode), in order."""
        return self._variants

    def fields(self) -> Mapping[str, object]:
        """The element type and reduction of every row."""
        return {"type": self._dtype.name, "redop": self._redop}

    def bus_factor(self, nranks: int) -> float:
        """2(p-1)/p: each rank sends (and receives) that share of the vector, at best."""
        return 2 * (nranks - 1) / nranks

    def link_factor(self, ranks_per_node: Sequence[int]) -> float:
        """2(q-1)/q for q nodes: each node's sum out to the others' parts, theirs back in."""
        return self.bus_factor(len(ranks_per_node))

    def count(self, nbytes: int) -> int:
        """Whole elements in ``nbytes`` (0, skipped, when fewer than one per tensor)."""
        count = nbytes // self._dtype.itemsize
        return count if self._tensors is None or count >= self._tensors else 0

    def setup(self, count: int) -> AllReduceSample:
        """Buffers and reference for ``count`` elements."""
        if self._tensors is not None:
            return TensorsSample(self._comm, self._mpi_comm, count=count, dtype=self._dtype,
                                 redop=self._redop, tensors=self._tensors)
        return self._sample(self._comm, self._mpi_comm, count=count, dtype=self._dtype,
                            redop=self._redop)

    def predict(self, variant: AllReduceVariant, nbytes: int) -> float | None:
        """The cost model's seconds for one call of ``variant`` (bench.prediction); none for
        mpi and for the fused and per-tensor modes."""
        if (variant.algorithm == MPI_BASELINE or variant.mode not in (None, "flat")
                or variant.deterministic):
            return None
        return self._prices.seconds(variant.algorithm, variant.compression, nbytes)
