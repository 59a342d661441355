"""What the collectives beside the all-reduce share as harness ops.

A :class:`Collective` is one nccl-tests per-collective file: a name, bytes -> count, the
bus bandwidth factor, the link factor, and its sample (data, the two calls, the check).
Every op measures MPI's own collective (``mpi``, :mod:`bench.ops.baseline`) and then the
library's call once per algorithm (``default``: no algorithm passed). The data are
:mod:`bench.reference`'s: rank r contributes row r of the value table at hashed codes,
so every result has a closed form.

Example (an op module)::

    class Broadcast(Collective):
        name, method, replicated = "broadcast", "broadcast", True
        sample = BroadcastSample
"""
from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bench.ops.baseline import MPI_BASELINE, Algorithm
from bench.reference import Expected, element_codes, poison, value_table

__all__ = ["DEFAULT", "Collective", "CollectiveSample", "gathered_wrong"]

DEFAULT = "default"  # the library's call without an algorithm argument


class CollectiveSample(abc.ABC):
    """One size of a collective on this rank: the table, the codes, and the last output.

    Subclasses set up their buffers (``_out``: the output the calls write, None where
    this rank gets none) and define the two calls and the check.
    """

    _out: np.ndarray | None

    def __init__(self, op: "Collective", count: int) -> None:
        self.op = op
        self.rank, self.size = op.comm.rank, op.comm.size
        self.table = value_table(self.size, integer=op.dtype.kind == "i")
        self.codes = element_codes(count)
        self.nbytes = count * op.dtype.itemsize
        self._output = np.empty(0, op.dtype)

    def run(self, variant: Algorithm) -> None:
        """MPI's call or the library's, once."""
        if variant.algorithm == MPI_BASELINE:
            self._output = self.mpi()
            return
        options = {} if variant.algorithm == DEFAULT else {"algorithm": variant.algorithm}
        self._output = self.library(options)

    def poison(self) -> None:
        """Fill the output with what no right result holds (before a checked turn)."""
        if self._out is not None:
            poison(self._out)

    def result(self) -> np.ndarray:
        """The last call's output, 1-D (empty where a rank gets none)."""
        return np.empty(0, self.op.dtype) if self._output is None else self._output.reshape(-1)

    @abc.abstractmethod
    def mpi(self) -> np.ndarray | None:
        """MPI's own collective through mpi4py, once; its output (None: none on this rank)."""

    @abc.abstractmethod
    def library(self, options: Mapping[str, object]) -> np.ndarray | None:
        """The library's call with ``options`` (its algorithm), once; its output."""

    @abc.abstractmethod
    def wrong(self, variant: Algorithm) -> int:
        """Elements of the last output off the closed-form reference."""


def gathered_wrong(table: np.ndarray, got: np.ndarray, codes: np.ndarray,
                   sources: Sequence[int]) -> int:
    """Wrong elements of ``got`` (one block per row of ``codes``), block i being exactly
    rank ``sources[i]``'s data at those codes."""
    return sum(Expected.row(table, rank).wrong(block, block_codes)
               for rank, block, block_codes in zip(sources, got.reshape(codes.shape), codes))


class Collective:
    """A harness op for one of the library's collectives (``comm.<method>``).

    ``blocks_per_rank``: whether the message splits into one block per rank (the count
    is then rounded down to a multiple of p, as nccl-tests does).
    """

    name: ClassVar[str]
    method: ClassVar[str]
    replicated: ClassVar[bool]
    sample: ClassVar[type[CollectiveSample]]
    reduces: ClassVar[bool] = False
    rooted: ClassVar[bool] = False
    blocks_per_rank: ClassVar[bool] = False

    def __init__(self, comm: Any, mpi_comm: Any, *, dtype: np.dtype, algorithms: Sequence[str],
                 redop: str = "sum", root: int = 0) -> None:
        if not 0 <= root < comm.size:
            raise ValueError(f"root {root} is not a rank of {comm.size}")
        self.comm, self.mpi_comm = comm, mpi_comm
        self.dtype, self.redop, self.root = dtype, redop, root
        self._variants = tuple(Algorithm(name) for name in (MPI_BASELINE, *algorithms))

    def variants(self) -> Sequence[Algorithm]:
        """mpi, then the library's call per algorithm."""
        return self._variants

    def fields(self) -> Mapping[str, object]:
        """The element type (and the reduction, the root) of every row."""
        return {"type": self.dtype.name, **({"redop": self.redop} if self.reduces else {}),
                **({"root": self.root} if self.rooted else {})}

    def count(self, nbytes: int) -> int:
        """Elements of the message as nccl-tests counts it (the whole buffer)."""
        count = nbytes // self.dtype.itemsize
        return count // self.comm.size * self.comm.size if self.blocks_per_rank else count

    def bus_factor(self, nranks: int) -> float:
        """(p-1)/p for the block-per-rank collectives, 1 for broadcast and reduce."""
        return (nranks - 1) / nranks if self.blocks_per_rank else 1.0

    def link_factor(self, ranks_per_node: Sequence[int]) -> float:
        """Per byte of the message, the most a node's link must carry one way: a block
        collective's blocks of the other nodes' ranks (or its own ranks' blocks, going
        out); broadcast and reduce the whole message."""
        if not self.blocks_per_rank:
            return 1.0
        p = sum(ranks_per_node)
        return max(max(k, p - k) / p for k in ranks_per_node)

    def setup(self, count: int) -> CollectiveSample:
        """Buffers and reference for ``count`` elements."""
        return self.sample(self, count)
