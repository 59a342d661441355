"""Halving-doubling all-reduce (Rabenseifner), recursive doubling for small messages, and
reduce-scatter by recursive halving.

Among p' = 2^floor(log2 p) ranks, numbered v = 0 .. p'-1:

1. Reduce-scatter by recursive halving: at step mask = 1, 2, .. p'/2, rank v pairs with
   v XOR mask; the pair halves its current region, each sends the half it gives up and
   reduces the half it keeps. After log2 p' steps each rank holds 1/p' of the data, final.
2. All-gather by recursive doubling: the steps in reverse, each rank sending its region to
   the same partner and copying the partner's (the sibling half) in.

Small messages (at most RECURSIVE_DOUBLING_BYTES) skip the halving: at each step the pair
swaps the whole vector and both reduce it, log2 p' steps of n bytes. Both partners compute
a (op) b and b (op) a, which are equal bits for IEEE sum, max and min of ordinary numbers.

The reduce-scatter collective (`reduce_scatter_rounds`) halves the other way round, mask =
p'/2, .., 2, 1 (MPICH's order): each kept half is then the blocks of a run of consecutive
ranks, so rank r ends with its own block split_bounds(0, n, p)[r] without a shuffle. The
price: the farthest partner gets the largest half, so with consecutive ranks on a node the
first log2 N steps, n/2 + n/4 + .., cross nodes.

Non-power-of-two p (the standard handling, as MPICH): with r = p - p', the first 2r ranks
pair up; each even one sends its whole vector to its odd neighbour, which reduces it, takes
part as v = rank // 2, and at the end sends the even one its result (the final vector, or
its block). Ranks >= 2r take part as v = rank - r.

Bytes sent per rank: 2 (p'-1)/p' n (halving-doubling), log2 p' n (recursive doubling),
plus n for the ranks that fold in or out when p is not a power of two; reduce-scatter:
(p-1)/p n, the folded-away ranks n. Latency terms: 2 log2 p' (halving-doubling) or log2 p'
(recursive doubling, reduce-scatter) alpha, + 2 when r > 0.
"""
from __future__ import annotations

from typing import Callable

from .plan import Plan, Region, Round, make_plan, recv_steps, send_steps, split_bounds
from .ring import segment_length

__all__ = ["RECURSIVE_DOUBLING_BYTES", "build", "schedule", "reduce_scatter_rounds"]

RECURSIVE_DOUBLING_BYTES = 16 << 10


class _Fold:
    """The power-of-two core of `size` ranks: p' = pof2 virtual ranks; the first 2 extra
    ranks fold in pairs, the odd one of each pair taking part as v = rank // 2."""

    def __init__(self, size: int):
        self.pof2 = 1 << (size.bit_length() - 1)
        self.extra = size - self.pof2
        self.masks = [1 << i for i in range(self.pof2.bit_length() - 1)]

    def away(self, rank: int) -> bool:
        """Whether `rank` folds into its odd neighbour and sits the core out."""
        return rank < 2 * self.extra and rank % 2 == 0

    def paired(self, rank: int) -> bool:
        """Whether `rank` takes part for itself and its even neighbour."""
        return rank < 2 * self.extra and rank % 2 == 1

    def virtual(self, rank: int) -> int:
        return rank // 2 if rank < 2 * self.extra else rank - self.extra

    def real(self, v: int) -> int:
        return 2 * v + 1 if v < self.extra else v + self.extra

    def first(self, v: int) -> int:
        """The lowest rank virtual rank v stands for."""
        return 2 * v if v < self.extra else v + self.extra


def _folded(fold: _Fold, rank: int, count: int, seg: int, returned: Callable[[int], Region],
            core: Callable[[int], list[Round]]) -> list[Round]:
    """`rank`'s rounds: the core's rounds `core(v)` of its virtual rank, inside the fold for
    p not a power of two, where an even rank gets `returned(rank)` back from its partner."""
    whole = ((0, count),)
    if fold.away(rank):
        # fold in, then wait for the result
        return [Round(sends=send_steps(rank + 1, whole, seg)),
                Round(recvs=recv_steps(rank + 1, returned(rank), seg, reduce=False))]
    if not fold.paired(rank):
        return core(fold.virtual(rank))
    return ([Round(recvs=recv_steps(rank - 1, whole, seg, reduce=True))]
            + core(fold.virtual(rank))
            + [Round(sends=send_steps(rank - 1, returned(rank - 1), seg))])  # fold out


def schedule(rank: int, size: int, count: int, seg: int, recursive_doubling: bool) -> list[Round]:
    """The all-reduce's rounds of `rank`, segments at most `seg` elements long."""
    fold = _Fold(size)
    whole = ((0, count),)

    def doubling(v: int) -> list[Round]:
        return [Round(sends=send_steps(peer, whole, seg), recvs=recv_steps(peer, whole, seg, True))
                for peer in (fold.real(v ^ mask) for mask in fold.masks)]

    def halving_doubling(v: int) -> list[Round]:
        rounds = []
        lo, hi = 0, count
        given = []
        for mask in fold.masks:  # reduce-scatter by recursive halving
            peer = fold.real(v ^ mask)
            mid = (lo + hi) // 2
            keep, give = ((mid, hi), (lo, mid)) if v & mask else ((lo, mid), (mid, hi))
            rounds.append(Round(sends=send_steps(peer, (give,), seg),
                                recvs=recv_steps(peer, (keep,), seg, reduce=True)))
            given.append((peer, give))
            lo, hi = keep
        for peer, give in reversed(given):  # all-gather by recursive doubling
            rounds.append(Round(sends=send_steps(peer, ((lo, hi),), seg),
                                recvs=recv_steps(peer, (give,), seg, reduce=False)))
            lo, hi = min(lo, give[0]), max(hi, give[1])
        return rounds

    return _folded(fold, rank, count, seg, lambda _: whole,
                   doubling if recursive_doubling else halving_doubling)


def build(rank: int, size: int, count: int, itemsize: int, topology=None, root: int = 0) -> Plan:
    """All-reduce: halving-doubling, or recursive doubling for small messages."""
    small = count * itemsize <= RECURSIVE_DOUBLING_BYTES
    rounds = schedule(rank, size, count, segment_length(itemsize), recursive_doubling=small)
    return make_plan("halving_doubling", rank, size, count, rounds)


def reduce_scatter_rounds(rank: int, size: int, count: int, seg: int, topology=None) -> list[Round]:
    """Reduce-scatter by recursive halving, the partner's distance halving each step, so
    rank r ends with its block (ring.blocks)."""
    fold = _Fold(size)
    block = split_bounds(0, count, size)

    def blocks_of(first_v: int, end_v: int) -> Region:
        """The elements of virtual ranks [first_v, end_v): their ranks' blocks."""
        return ((block[fold.first(first_v)][0], block[fold.real(end_v - 1)][1]),)

    def halving(v: int) -> list[Round]:
        rounds = []
        lo = 0  # the kept virtual ranks are [lo, lo + 2 mask)
        for mask in reversed(fold.masks):
            peer = fold.real(v ^ mask)
            lower, upper = (lo, lo + mask), (lo + mask, lo + 2 * mask)
            keep, give = (upper, lower) if v & mask else (lower, upper)
            rounds.append(Round(sends=send_steps(peer, blocks_of(*give), seg),
                                recvs=recv_steps(peer, blocks_of(*keep), seg, reduce=True)))
            lo = keep[0]
        return rounds

    return _folded(fold, rank, count, seg, lambda even: (block[even],), halving)
