"""Ring schedules: reduce-scatter and all-gather around a ring of ranks, and what they build.

A ring phase passes one region per ring position around the ring in p-1 steps. In
reduce-scatter step s (s = 0 .. p-2) position i sends region (i - s - 1) to its successor
and reduces region (i - s - 2) arriving from its predecessor; afterwards position i holds
its own region i reduced over the ring. All-gather step s passes final regions (i - s) on,
copying region (i - s - 1) in.

- all-reduce: the data cut into p chunks, position i owning chunk i + 1 (Gloo's layout),
  reduce-scatter then all-gather: 2 (p-1) steps, 2 (p-1)/p * n bytes sent per rank (the
  lower bound);
- reduce-scatter: rank r owning its block split_bounds(0, n, p)[r]: p-1 steps, (p-1)/p * n;
- all-gather: the same blocks the other way: p-1 steps, (p-1)/p * n (n the whole output).

Each region travels in segments of at most SEGMENT_BYTES so that the reduction of one
segment overlaps the transfer of the next. The phases are exported over any group of
ranks and any regions, so hierarchical, torus and rooted schedules compose them.
"""
from __future__ import annotations

from typing import Sequence

from .plan import Plan, Region, Round, chunk_bounds, make_plan, recv_steps, send_steps, split_bounds

__all__ = ["SEGMENT_BYTES", "segment_length", "build", "reduce_scatter_rounds",
           "reduce_scatter", "all_gather", "allreduce_chunks", "owned_chunk", "blocks"]

SEGMENT_BYTES = 1 << 20


def segment_length(itemsize: int) -> int:
    """Elements per segment: at most SEGMENT_BYTES, at least one."""
    return max(1, SEGMENT_BYTES // itemsize)


def owned_chunk(position: int, group_size: int) -> int:
    """Index of the all-reduce chunk that ring position `position` holds after reduce_scatter."""
    return (position + 1) % group_size


def allreduce_chunks(lo: int, hi: int, group_size: int) -> list[Region]:
    """The all-reduce's regions per position: chunk_bounds of [lo, hi), position i owning
    chunk owned_chunk(i)."""
    chunks = chunk_bounds(lo, hi, group_size)
    return [(chunks[owned_chunk(i, group_size)],) for i in range(group_size)]


def blocks(count: int, size: int) -> list[Region]:
    """Rank r's block split_bounds(0, count, size)[r] per rank, as regions."""
    return [(bounds,) for bounds in split_bounds(0, count, size)]


def _ring_rounds(group: Sequence[int], me: int, owned: Sequence[Region], seg: int, shift: int,
                 reduce: bool) -> list[Round]:
    g = len(group)
    position = group.index(me)
    successor, predecessor = group[(position + 1) % g], group[(position - 1) % g]
    return [Round(sends=send_steps(successor, owned[(position + shift - s) % g], seg),
                  recvs=recv_steps(predecessor, owned[(position + shift - s - 1) % g], seg, reduce))
            for s in range(g - 1)]


def reduce_scatter(group: Sequence[int], me: int, owned: Sequence[Region], seg: int) -> list[Round]:
    """Rounds after which position i of `group` holds owned[i] reduced over the group."""
    return _ring_rounds(group, me, owned, seg, shift=-1, reduce=True)


def all_gather(group: Sequence[int], me: int, owned: Sequence[Region], seg: int) -> list[Round]:
    """Rounds that copy owned[i], final at position i, to the whole `group`."""
    return _ring_rounds(group, me, owned, seg, shift=0, reduce=False)


def build(rank: int, size: int, count: int, itemsize: int, topology=None, root: int = 0) -> Plan:
    """All-reduce."""
    group, seg = range(size), segment_length(itemsize)
    owned = allreduce_chunks(0, count, size)
    rounds = reduce_scatter(group, rank, owned, seg) + all_gather(group, rank, owned, seg)
    return make_plan("ring", rank, size, count, rounds)


def reduce_scatter_rounds(rank: int, size: int, count: int, seg: int, topology=None) -> list[Round]:
    """Reduce-scatter: rank r ends with its block (`blocks`) of the reduction."""
    return reduce_scatter(range(size), rank, blocks(count, size), seg)

