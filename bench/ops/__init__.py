"""The measured collectives, one module each, as nccl-tests has one file per collective.

Each supplies the harness's op contract (:class:`bench.harness.Op`): name, bytes ->
count, data and its closed-form check, bus bandwidth factor, the call. Each measures
MPI's own collective through mpi4py (``mpi``, the baseline) beside the library's.

| op | module | library call | MPI's own | bus factor |
| --- | --- | --- | --- | --- |
| allreduce | allreduce.py | comm.allreduce | MPI_Allreduce | 2(p-1)/p |
| reduce_scatter | reduce_scatter.py | comm.reduce_scatter | MPI_Reduce_scatter_block | (p-1)/p |
| allgather | allgather.py | comm.allgather | MPI_Allgather | (p-1)/p |
| broadcast | broadcast.py | comm.broadcast | MPI_Bcast | 1 |
| reduce | reduce.py | comm.reduce | MPI_Reduce | 1 |
| alltoall | alltoall.py | comm.alltoall | MPI_Alltoall | (p-1)/p |
"""
from __future__ import annotations

from collections.abc import Sequence

from bench.ops.allgather import AllGather
from bench.ops.alltoall import AllToAll
from bench.ops.base import DEFAULT, Collective
from bench.ops.baseline import MPI_BASELINE
from bench.ops.broadcast import Broadcast
from bench.ops.reduce import Reduce
from bench.ops.reduce_scatter import ReduceScatter

__all__ = ["COLLECTIVES", "OTHERS", "algorithms_for", "library_algorithms"]

OTHERS: dict[str, type[Collective]] = {
    op.name: op for op in (ReduceScatter, AllGather, Broadcast, Reduce, AllToAll)}
COLLECTIVES = ("allreduce", *OTHERS)


def algorithms_for(collective: str, text: str, known: Sequence[str]) -> tuple[str, ...]:
    """The library algorithms ``--algorithms`` asks for (``mpi`` is always measured and
    left out here; ``all``: every one ``known``); ValueError for names not accepted.

    >>> algorithms_for("allreduce", "mpi,ring", ("ring", "native"))
    ('ring',)
    """
    accepted = tuple(known) + ((DEFAULT,) if collective != "allreduce" else ())
    names = accepted if text == "all" else tuple(text.split(","))
    unknown = [name for name in names if name and name not in (*accepted, MPI_BASELINE)]
    if unknown or not names:
        raise ValueError(f"unknown algorithms for {collective}: {', '.join(unknown) or repr(text)}"
                         f"; choose from {', '.join((MPI_BASELINE, *accepted))} or 'all'")
    # (a name twice made two columns, both summarised as the last; ',' was "'' given twice")
    twice = sorted({name for name in names if name and names.count(name) > 1})
    problems = [f"{', '.join(twice)} given twice"] * bool(twice) + ["an empty name"] * ("" in names)
    if problems:
        raise ValueError(f"--algorithms {text!r}: {'; '.join(problems)}")
    return tuple(name for name in names if name != MPI_BASELINE)


def library_algorithms(collective: str) -> tuple[str, ...]:
    """What the library's `collective` accepts as `algorithm`: auto, native and its plans."""
    from collectives.algorithms import PLANNERS

    return ("auto", "native", *PLANNERS[collective])
