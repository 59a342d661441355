"""All-gather (nccl-tests' ``all_gather.cu``): size = the whole output buffer (p blocks),
busbw = algbw x (p-1)/p. Every rank gets every rank's block in rank order:
``comm.allgather(x, algorithm, out)`` (shape (p, *x.shape)), or ``MPI_Allgather``."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bench.ops.base import Collective, CollectiveSample, gathered_wrong
from bench.ops.baseline import buffer
from bench.reference import inputs

__all__ = ["AllGather"]


class AllGatherSample(CollectiveSample):
    def __init__(self, op: Collective, count: int) -> None:
        super().__init__(op, count)
        self._blocks = self.codes.reshape(self.size, count // self.size)
        self._x = inputs(self.table, rank=self.rank, codes=self._blocks[self.rank],
                         dtype=op.dtype)
        self._out = np.empty((self.size, self._x.size), op.dtype)

    def mpi(self) -> np.ndarray:
        self.op.mpi_comm.Allgather(buffer(self._x), buffer(self._out))
        return self._out

    def library(self, options: Mapping[str, object]) -> np.ndarray:
        return self.op.comm.allgather(self._x, out=self._out, **options)

    def wrong(self, variant) -> int:
        return gathered_wrong(self.table, self.result(), self._blocks, range(self.size))


class AllGather(Collective):
    name = method = "allgather"
    replicated = blocks_per_rank = True
    sample = AllGatherSample
