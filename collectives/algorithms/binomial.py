"""Binomial trees rooted at any rank: broadcast and scatter, and run backwards, reduce and gather.

Ranks are numbered relative to the root, i = (rank - root) mod p. Relative rank i > 0 has
parent i - lsb(i) (lsb: its lowest set bit) and children i + m for m = lsb(i)/2, .., 2, 1
(the root: every power of two m < p), where i + m < p; child i + m heads the subtree of
relative ranks [i + m, min(i + 2m, p)). A rank receives from its parent, then sends to its
children one round each, the largest subtree first, so the last rank has the data after
ceil(log2 p) steps.

- broadcast ("tree"): every subtree gets the whole message. The root sends ceil(log2 p) n
  bytes, every other rank receives n once; latency ceil(log2 p) (alpha + n beta).
- reduce ("tree"): the broadcast reversed (plan.reverse): each rank reduces its children's
  vectors in, the smallest subtree first, then sends the sum to its parent. Every rank but
  the root sends n; the root reduces ceil(log2 p) n; latency ceil(log2 p) (alpha + n beta
  + n gamma). Each element is reduced in one fixed order, so its bits are fixed.
- scatter: each subtree gets its ranks' regions (`regions[i]` for relative rank i), so
  relative rank i sends what its children's subtrees hold: the root (p-1)/p n when the
  regions are equal blocks. Gather is the scatter reversed.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .plan import Plan, Region, Round, make_plan, recv_steps, reverse, send_steps, union
from .ring import segment_length

__all__ = ["tree", "scatter", "build_broadcast", "build_reduce"]


def tree(rank: int, size: int, root: int, subtree: Callable[[int, int], Region],
         seg: int) -> list[Round]:
    """`rank`'s rounds of a binomial tree that sends subtree(i, j) to the child heading the
    relative ranks [i, j): one receive from the parent, then a send per child."""
    relative = (rank - root) % size
    reach = relative & -relative if relative else 1 << (size - 1).bit_length()
    rounds = []
    if relative:
        parent = (rank - reach) % size
        region = subtree(relative, min(relative + reach, size))
        rounds.append(Round(recvs=recv_steps(parent, region, seg, reduce=False)))
    m = reach // 2
    while m:
        child = relative + m
        if child < size:
            region = subtree(child, min(child + m, size))
            rounds.append(Round(sends=send_steps((root + child) % size, region, seg)))
        m //= 2
    return rounds


def scatter(rank: int, size: int, root: int, regions: Sequence[Region], seg: int) -> list[Round]:
    """Binomial scatter: relative rank i ends with regions[i] (the root holds them all)."""
    return tree(rank, size, root, lambda i, j: union(regions[i:j]), seg)


def build_broadcast(rank: int, size: int, count: int, itemsize: int, topology=None,
                    root: int = 0) -> Plan:
    """Broadcast down the tree: the whole message to every subtree."""
    rounds = tree(rank, size, root, lambda i, j: ((0, count),), segment_length(itemsize))
    return make_plan("tree", rank, size, count, rounds, collective="broadcast", root=root)


def build_reduce(rank: int, size: int, count: int, itemsize: int, topology=None,
                 root: int = 0) -> Plan:
    """Reduce up the tree: the broadcast reversed."""
    down = tree(rank, size, root, lambda i, j: ((0, count),), segment_length(itemsize))
    return make_plan("tree", rank, size, count, reverse(down, reduce=True), collective="reduce",
                     root=root)
