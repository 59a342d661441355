"""Reduce-scatter (nccl-tests' ``reduce_scatter.cu``): size = the whole input buffer,
busbw = algbw x (p-1)/p. Rank r gets block r of the reduction:
``comm.reduce_scatter(x, op, algorithm, out)``, or ``MPI_Reduce_scatter_block``."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bench.ops.base import Collective, CollectiveSample
from bench.ops.baseline import buffer, finish, reduction
from bench.reference import Expected, inputs, rounding_eps

__all__ = ["ReduceScatter"]


class ReduceScatterSample(CollectiveSample):
    def __init__(self, op: Collective, count: int) -> None:
        super().__init__(op, count)
        block = count // self.size
        self._x = inputs(self.table, rank=self.rank, codes=self.codes, dtype=op.dtype)
        self._out = np.empty(block, op.dtype)
        self._mine = self.codes[self.rank * block:(self.rank + 1) * block]
        self._expected = Expected.reduction(self.table, op.redop,
                                            eps=rounding_eps(op.dtype, None))

    def mpi(self) -> np.ndarray:
        self.op.mpi_comm.Reduce_scatter_block(buffer(self._x), buffer(self._out),
                                              op=reduction(self.op.dtype, self.op.redop))
        finish(self._out, self.op.redop, self.size)
        return self._out

    def library(self, options: Mapping[str, object]) -> np.ndarray:
        return self.op.comm.reduce_scatter(self._x, op=self.op.redop, out=self._out,
                                           deterministic=False, **options)  # (as labelled)

    def wrong(self, variant) -> int:
        return self._expected.wrong(self.result(), self._mine)


class ReduceScatter(Collective):
    name = method = "reduce_scatter"
    replicated = False
    reduces = blocks_per_rank = True
    sample = ReduceScatterSample
