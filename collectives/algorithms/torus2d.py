"""2-D torus all-reduce on a grid of Y rows of X ranks (Topology.grid_shape / grid_rows).

1. Reduce-scatter along the row: a ring over the X ranks of the row leaves row position j
   with chunk ring.owned_chunk(j) (1/X of the data) reduced over its row.
2. All-reduce along the column: the Y ranks at position j of every row hold the same chunk;
   a ring (reduce-scatter then all-gather) over the column finishes it.
3. All-gather along the row spreads the final chunks.

Each element's final value is computed once, in the column reduce-scatter, and copied
everywhere else, so all ranks hold identical bits.

Bytes sent per rank (n bytes, p = X Y): 2 (X-1)/X n along the row + 2 (Y-1)/Y n/X along the
column = 2 (p-1)/p n, the ring's. Latency terms: 2 (X-1) + 2 (Y-1) alpha instead of the
ring's 2 (p-1). A 1 x p or p x 1 grid (prime p) is a plain ring.

The reduce-scatter collective (`reduce_scatter_rounds`) is two_level over the rows: along
the row, then along the column, rank r ending with its own block; (p-1)/p n per rank,
(X-1) + (Y-1) rounds.
"""
from __future__ import annotations

from ..topology import Topology
from . import ring, two_level
from .plan import Plan, Round, make_plan

__all__ = ["build", "reduce_scatter_rounds"]


def build(rank: int, size: int, count: int, itemsize: int, topology: Topology | None = None,
          root: int = 0) -> Plan:
    """All-reduce."""
    topology = topology or Topology.from_local_size(size, 1)
    seg = ring.segment_length(itemsize)
    rows = topology.grid_rows()
    row = next(r for r in rows if rank in r)
    position = row.index(rank)
    column = tuple(r[position] for r in rows)
    chunks = ring.allreduce_chunks(0, count, len(row))
    column_chunks = ring.allreduce_chunks(*chunks[position][0], len(column))
    # 1. reduce-scatter along the row
    rounds = ring.reduce_scatter(row, rank, chunks, seg)
    # 2. all-reduce the owned chunk along the column
    rounds += (ring.reduce_scatter(column, rank, column_chunks, seg)
               + ring.all_gather(column, rank, column_chunks, seg))
    # 3. all-gather along the row
    rounds += ring.all_gather(row, rank, chunks, seg)
    return make_plan("torus2d", rank, size, count, rounds)


def reduce_scatter_rounds(rank: int, size: int, count: int, seg: int,
                          topology: Topology | None = None) -> list[Round]:
    """Reduce-scatter in two levels (two_level), the rows as groups: along the row, then
    along the column, each rank's block ending at the rank."""
    topology = topology or Topology.from_local_size(size, 1)
    return two_level.reduce_scatter(topology.grid_rows(), rank, count, seg)

