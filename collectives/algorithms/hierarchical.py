"""Hierarchical all-reduce, bandwidth-preserving form: every local rank uses the network.

1. Intra-node reduce-scatter: a ring over the node's k ranks leaves each local rank with one
   1/k slice of the data reduced over its node.
2. Inter-node all-reduce: each slice is all-reduced by a ring among the ranks that own it,
   one per node (the same-local-rank peers); all k slices at once.
3. Intra-node all-gather: a ring over the node spreads the final slices.

Uneven nodes (a node of k_j ranks cuts the data into k_j slices): the inter-node step runs on
the common refinement of all nodes' slice boundaries. Each piece between two consecutive
boundaries lies inside exactly one slice of every node, and is all-reduced by a ring of those
slices' owners. Every rank still reduces and sends only its own 1/k_j of the data and keeps
its share of the network busy; with even nodes the pieces are exactly the k slices.

Each element's final value is computed once, by the rank that finishes its inter-node
reduce-scatter, and copied everywhere else, so all ranks hold identical bits.

Bytes sent per rank (n bytes, N nodes of k ranks, p = N k): 2 (k-1)/k n inside the node
+ 2 (N-1)/N n/k across nodes = 2 (p-1)/p n, the ring's. Latency terms: 2 (k-1) + 2 (N-1)
alpha. One node is a ring over the node; one rank per node is a ring over the nodes.

The reduce-scatter collective (`reduce_scatter_rounds`, also the first phase of reduce and,
reversed, the all-gather) is two_level over the nodes: inside the node, then across, rank r
ending with its own block; (p-1)/p n per rank, (k-1) + (N-1) rounds.
"""
from __future__ import annotations

import bisect
from typing import Sequence

from ..topology import Topology
from . import ring, two_level
from .plan import Plan, Round, chunk_bounds, make_plan, merge_rounds

__all__ = ["build", "reduce_scatter_rounds", "slice_owners"]


def slice_owners(nodes: Sequence[Sequence[int]], count: int) -> list[tuple[int, int, tuple[int, ...]]]:
    """(lo, hi, owners) per non-empty piece of the common refinement of the nodes' slices.

    `owners` holds, per node, the rank that holds the piece after the intra-node ring
    reduce-scatter (ring.owned_chunk), in node order.
    """
    cuts = [chunk_bounds(0, count, len(node)) for node in nodes]
    starts = [[lo for lo, _ in node_cuts] for node_cuts in cuts]
    edges = sorted({edge for node_cuts in cuts for bounds in node_cuts for edge in bounds})
    pieces = []
    for lo, hi in zip(edges, edges[1:]):
        owners = []
        for node, node_starts in zip(nodes, starts):
            chunk = bisect.bisect_right(node_starts, lo) - 1  # the non-empty slice holding lo
            # ring position i ends up owning chunk owned_chunk(i) = i + 1 (mod k)
            owners.append(node[(chunk - 1) % len(node)])
        pieces.append((lo, hi, tuple(owners)))
    return pieces


def build(rank: int, size: int, count: int, itemsize: int, topology: Topology | None = None,
          root: int = 0) -> Plan:
    """All-reduce."""
    topology = topology or Topology.from_local_size(size, size)
    seg = ring.segment_length(itemsize)
    node = topology.peers(rank)
    slices = ring.allreduce_chunks(0, count, len(node))
    # 1. reduce-scatter inside the node
    rounds = ring.reduce_scatter(node, rank, slices, seg)
    # 2. all-reduce each owned piece across nodes, all pieces at once
    schedules = []
    for lo, hi, owners in slice_owners(topology.nodes, count):
        if rank in owners:
            chunks = ring.allreduce_chunks(lo, hi, len(owners))
            schedules.append(ring.reduce_scatter(owners, rank, chunks, seg)
                             + ring.all_gather(owners, rank, chunks, seg))
    rounds += merge_rounds(schedules)
    # 3. all-gather inside the node
    rounds += ring.all_gather(node, rank, slices, seg)
    return make_plan("hierarchical", rank, size, count, rounds)


def reduce_scatter_rounds(rank: int, size: int, count: int, seg: int,
                          topology: Topology | None = None) -> list[Round]:
    """Reduce-scatter in two levels (two_level), the nodes as groups."""
    topology = topology or Topology.from_local_size(size, size)
    return two_level.reduce_scatter(topology.nodes, rank, count, seg)

