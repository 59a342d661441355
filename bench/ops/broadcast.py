"""Broadcast (nccl-tests' ``broadcast.cu``): size = the buffer, busbw = algbw. Every rank
gets root's buffer: ``comm.broadcast(x, root, algorithm, out)`` with MPI_Bcast's buffers
(root: ``out=x``, in place; elsewhere a separate output), or ``MPI_Bcast`` itself."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bench.ops.base import Collective, CollectiveSample, gathered_wrong
from bench.ops.baseline import buffer
from bench.reference import inputs

__all__ = ["Broadcast"]


class BroadcastSample(CollectiveSample):
    def __init__(self, op: Collective, count: int) -> None:
        super().__init__(op, count)
        # every rank holds its own data: a rank the broadcast misses keeps the wrong values
        self._x = inputs(self.table, rank=self.rank, codes=self.codes, dtype=op.dtype)
        self._out = np.empty_like(self._x)

    def mpi(self) -> np.ndarray:
        root = self.op.root
        data = self._x if self.rank == root else self._out
        self.op.mpi_comm.Bcast(buffer(data), root=root)
        return data

    def library(self, options: Mapping[str, object]) -> np.ndarray:
        """The buffers MPI_Bcast uses: root's input (in place) on root, the output elsewhere."""
        out = self._x if self.rank == self.op.root else self._out
        return self.op.comm.broadcast(self._x, root=self.op.root, out=out, **options)

    def wrong(self, variant) -> int:
        return gathered_wrong(self.table, self.result(), self.codes[None], [self.op.root])


class Broadcast(Collective):
    name = method = "broadcast"
    replicated = rooted = True
    sample = BroadcastSample
