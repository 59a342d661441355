"""Broadcast for large messages: binomial scatter, then ring all-gather (van de Geijn).

Relative to the root (i = (rank - root) mod p), relative rank i's block is
split_bounds(0, n, p)[i]:

1. Scatter down the binomial tree (binomial.scatter): relative rank i ends with block i.
   ceil(log2 p) steps; the root sends (p-1)/p n.
2. All-gather around the ring of relative ranks 0, 1, .., p-1 (ring.all_gather). p-1 steps,
   (p-1)/p n per rank.

Bytes sent per rank: at most 2 (p-1)/p n (the root), against ceil(log2 p) n for the tree's
root. Latency terms: ceil(log2 p) + p - 1 alpha.
"""
from __future__ import annotations

from . import binomial, ring
from .plan import Plan, make_plan

__all__ = ["build"]


def build(rank: int, size: int, count: int, itemsize: int, topology=None, root: int = 0) -> Plan:
    """Broadcast from `root`: scatter its blocks, then all-gather them."""
    seg = ring.segment_length(itemsize)
    blocks = ring.blocks(count, size)  # by relative rank
    relative_ring = [(root + i) % size for i in range(size)]
    rounds = (binomial.scatter(rank, size, root, blocks, seg)
              + ring.all_gather(relative_ring, rank, blocks, seg))
    return make_plan("scatter_allgather", rank, size, count, rounds, collective="broadcast",
                     root=root)
