"""Reduce (nccl-tests' ``reduce.cu``): size = the buffer, busbw = algbw. Root gets the
reduction, the other ranks nothing: ``comm.reduce(x, root, op, algorithm, out)`` (None
off root), or ``MPI_Reduce``."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bench.ops.base import Collective, CollectiveSample
from bench.ops.baseline import buffer, finish, reduction
from bench.reference import Expected, inputs, rounding_eps

__all__ = ["Reduce"]


class ReduceSample(CollectiveSample):
    def __init__(self, op: Collective, count: int) -> None:
        super().__init__(op, count)
        self._x = inputs(self.table, rank=self.rank, codes=self.codes, dtype=op.dtype)
        self._out = np.empty_like(self._x) if self.rank == op.root else None
        self._expected = Expected.reduction(self.table, op.redop,
                                            eps=rounding_eps(op.dtype, None))

    def mpi(self) -> np.ndarray | None:
        op = self.op
        op.mpi_comm.Reduce(buffer(self._x), None if self._out is None else buffer(self._out),
                           op=reduction(op.dtype, op.redop), root=op.root)
        if self._out is not None:
            finish(self._out, op.redop, self.size)
        return self._out

    def library(self, options: Mapping[str, object]) -> np.ndarray | None:
        return self.op.comm.reduce(self._x, root=self.op.root, op=self.op.redop, out=self._out,
                                   deterministic=False, **options)  # (as labelled)

    def wrong(self, variant) -> int:
        """Off the reference on root; elsewhere, any output at all."""
        if self._out is None:
            return self.result().size
        return self._expected.wrong(self.result(), self.codes)


class Reduce(Collective):
    name = method = "reduce"
    replicated = False
    reduces = rooted = True
    sample = ReduceSample
