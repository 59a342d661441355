"""Ring all-reduce: reduce-scatter then all-gather around a ring of ranks.

The data is cut into p chunks. In reduce-scatter step s (s = 0 .. p-2) the rank at ring
position i sends chunk (i - s) to its successor and reduces chunk (i - s - 1) arriving from
its predecessor; afterwards position i holds the final chunk (i + 1). All-gather step s
then passes final chunks (i + 1 - s) on, copying chunk (i - s) in.

Bytes sent per rank: 2 (p-1)/p * n (the lower bound); latency terms: 2 (p-1) alpha.
Each chunk travels in segments of at most SEGMENT_BYTES so that the reduction of one
segment overlaps the transfer of the next.

The phases are exported as building blocks over any group of ranks and any region, so
hierarchical and torus schedules compose them.
"""
from __future__ import annotations

from typing import Sequence

from .plan import Plan, Recv, Round, Send, chunk_bounds, segments

__all__ = ["SEGMENT_BYTES", "build", "reduce_scatter", "all_gather", "owned_chunk"]

SEGMENT_BYTES = 1 << 20


def owned_chunk(position: int, group_size: int) -> int:
    """Index of the chunk that ring position `position` holds fully reduced after reduce_scatter."""
    return (position + 1) % group_size


def _ring_rounds(
    group: Sequence[int], me: int, lo: int, hi: int, seg: int, first_chunk: int, reduce: bool
) -> list[Round]:
    g = len(group)
    position = group.index(me)
    successor, predecessor = group[(position + 1) % g], group[(position - 1) % g]
    chunks = chunk_bounds(lo, hi, g)
    rounds = []
    for s in range(g - 1):
        send_lo, send_hi = chunks[(position + first_chunk - s) % g]
        recv_lo, recv_hi = chunks[(position + first_chunk - s - 1) % g]
        rounds.append(
            Round(
                sends=tuple(Send(successor, a, b) for a, b in segments(send_lo, send_hi, seg)),
                recvs=tuple(
                    Recv(predecessor, a, b, reduce) for a, b in segments(recv_lo, recv_hi, seg)
                ),
            )
        )
    return rounds


def reduce_scatter(group: Sequence[int], me: int, lo: int, hi: int, seg: int) -> list[Round]:
    """Rounds after which `me` holds chunk owned_chunk(position) of [lo, hi) reduced over `group`."""
    return _ring_rounds(group, me, lo, hi, seg, first_chunk=0, reduce=True)


def all_gather(group: Sequence[int], me: int, lo: int, hi: int, seg: int) -> list[Round]:
    """Rounds that spread each position's owned chunk of [lo, hi) to the whole `group`."""
    return _ring_rounds(group, me, lo, hi, seg, first_chunk=1, reduce=False)


def build(rank: int, size: int, count: int, itemsize: int, topology=None) -> Plan:
    group = range(size)
    seg = max(1, SEGMENT_BYTES // itemsize)
    rounds = reduce_scatter(group, rank, 0, count, seg) + all_gather(group, rank, 0, count, seg)
    return Plan("ring", rank, size, count, tuple(r for r in rounds if r.sends or r.recvs))
