"""All-to-all (nccl-tests' ``alltoall.cu``): size = each rank's whole buffer (p blocks),
busbw = algbw x (p-1)/p. Block r of rank s goes to rank r, as its block s:
``comm.alltoall(x, out, algorithm=...)`` with x of shape (p, ...), or ``MPI_Alltoall``."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bench.ops.base import Collective, CollectiveSample, gathered_wrong
from bench.ops.baseline import buffer
from bench.reference import inputs

__all__ = ["AllToAll"]


class AllToAllSample(CollectiveSample):
    def __init__(self, op: Collective, count: int) -> None:
        super().__init__(op, count)
        self._blocks = self.codes.reshape(self.size, count // self.size)
        self._x = inputs(self.table, rank=self.rank, codes=self.codes,
                         dtype=op.dtype).reshape(self._blocks.shape)
        self._out = np.empty_like(self._x)

    def mpi(self) -> np.ndarray:
        self.op.mpi_comm.Alltoall(buffer(self._x), buffer(self._out))
        return self._out

    def library(self, options: Mapping[str, object]) -> np.ndarray:
        return self.op.comm.alltoall(self._x, out=self._out, **options)

    def wrong(self, variant) -> int:
        """Block r must be rank r's block for this rank: rank r's data at this rank's codes."""
        mine = np.broadcast_to(self._blocks[self.rank], self._blocks.shape)
        return gathered_wrong(self.table, self.result(), mine, range(self.size))


class AllToAll(Collective):
    name = method = "alltoall"
    replicated = False
    blocks_per_rank = True
    sample = AllToAllSample

    def link_factor(self, ranks_per_node: Sequence[int]) -> float:
        """Every rank of a node sends the blocks of the other nodes' ranks out (and gets
        theirs in): k(p-k)/p of one rank's buffer for a node of k ranks."""
        p = sum(ranks_per_node)
        return max(k * (p - k) / p for k in ranks_per_node)
