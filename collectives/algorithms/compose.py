"""Collectives built from an algorithm's reduce-scatter.

A reduce-scatter phase is `phase(rank, size, count, seg, topology) -> rounds` after which
rank r holds its block split_bounds(0, count, size)[r] (ring.blocks) reduced over all ranks,
in segments of at most `seg` elements. From it:

- reduce_scatter: the phase alone;
- allgather: the phase reversed (plan.reverse): every step backwards in time, sends and
  receives swapped, so each block flows from its rank along the reduce-scatter's paths
  backwards to every rank. Same rounds and bytes per rank as the reduce-scatter;
- reduce: the phase, then a binomial gather of the blocks to the root (binomial.scatter
  reversed; Rabenseifner's reduce). The gather adds ceil(log2 p) latency terms and at most
  (p-1)/p n bytes (into the root; relative rank i sends its subtree's blocks).

Builders take `(algorithm, phase)` first: functools.partial them into the registry.
"""
from __future__ import annotations

from typing import Callable

from . import binomial, ring
from .plan import Plan, Round, make_plan, reverse

__all__ = ["Phase", "build_reduce_scatter", "build_allgather", "build_reduce"]

Phase = Callable[..., list[Round]]


def build_reduce_scatter(algorithm: str, phase: Phase, rank: int, size: int, count: int,
                         itemsize: int, topology=None, root: int = 0) -> Plan:
    """Rank r ends with its block of the reduction."""
    rounds = phase(rank, size, count, ring.segment_length(itemsize), topology)
    return make_plan(algorithm, rank, size, count, rounds, collective="reduce_scatter")


def build_allgather(algorithm: str, phase: Phase, rank: int, size: int, count: int,
                    itemsize: int, topology=None, root: int = 0) -> Plan:
    """Rank r's block goes to every rank: the reduce-scatter reversed."""
    rounds = phase(rank, size, count, ring.segment_length(itemsize), topology)
    return make_plan(algorithm, rank, size, count, reverse(rounds, reduce=False),
                     collective="allgather")


def build_reduce(algorithm: str, phase: Phase, rank: int, size: int, count: int,
                 itemsize: int, topology=None, root: int = 0) -> Plan:
    """The reduction lands on `root`: reduce-scatter, then gather the blocks there."""
    seg = ring.segment_length(itemsize)
    blocks = ring.blocks(count, size)
    by_relative_rank = [blocks[(root + i) % size] for i in range(size)]
    gather = reverse(binomial.scatter(rank, size, root, by_relative_rank, seg), reduce=False)
    rounds = phase(rank, size, count, seg, topology) + gather
    return make_plan(algorithm, rank, size, count, rounds, collective="reduce", root=root)
