"""Halving-doubling all-reduce (Rabenseifner), with recursive doubling for small messages.

Among p' = 2^floor(log2 p) ranks, numbered v = 0 .. p'-1:

1. Reduce-scatter by recursive halving: at step mask = 1, 2, .. p'/2, rank v pairs with
   v XOR mask; the pair halves its current region, each sends the half it gives up and
   reduces the half it keeps. After log2 p' steps each rank holds 1/p' of the data, final.
2. All-gather by recursive doubling: the steps in reverse, each rank sending its region to
   the same partner and copying the partner's (the sibling half) in.

Small messages (at most RECURSIVE_DOUBLING_BYTES) skip the halving: at each step the pair
swaps the whole vector and both reduce it, log2 p' steps of n bytes. Both partners compute
a (op) b and b (op) a, which are equal bits for IEEE sum, max and min of ordinary numbers.

Non-power-of-two p (the standard handling, as MPICH): with r = p - p', the first 2r ranks
pair up; each even one sends its whole vector to its odd neighbour, which reduces it, takes
part as v = rank // 2, and sends the final vector back at the end. Ranks >= 2r take part as
v = rank - r.

Bytes sent per rank: 2 (p'-1)/p' n (halving-doubling), log2 p' n (recursive doubling), plus
n for the ranks that fold in or out when p is not a power of two. Latency terms:
2 log2 p' (halving-doubling) or log2 p' (recursive doubling) alpha, + 2 when r > 0.
"""
from __future__ import annotations

from .plan import Plan, Recv, Round, Send, segments
from .ring import SEGMENT_BYTES

__all__ = ["RECURSIVE_DOUBLING_BYTES", "build", "schedule"]

RECURSIVE_DOUBLING_BYTES = 16 << 10


def _sends(peer: int, lo: int, hi: int, seg: int) -> tuple[Send, ...]:
    return tuple(Send(peer, a, b) for a, b in segments(lo, hi, seg))


def _recvs(peer: int, lo: int, hi: int, seg: int, reduce: bool) -> tuple[Recv, ...]:
    return tuple(Recv(peer, a, b, reduce) for a, b in segments(lo, hi, seg))


def schedule(rank: int, size: int, count: int, seg: int, recursive_doubling: bool) -> list[Round]:
    """The rounds of `rank`, segments at most `seg` elements long."""
    pof2 = 1 << (size.bit_length() - 1)
    extra = size - pof2

    def real(v: int) -> int:
        return 2 * v + 1 if v < extra else v + extra

    if rank < 2 * extra and rank % 2 == 0:
        # fold in, then wait for the final vector
        return [Round(sends=_sends(rank + 1, 0, count, seg)),
                Round(recvs=_recvs(rank + 1, 0, count, seg, reduce=False))]
    rounds = []
    if rank < 2 * extra:
        rounds.append(Round(recvs=_recvs(rank - 1, 0, count, seg, reduce=True)))
    v = rank // 2 if rank < 2 * extra else rank - extra
    masks = [1 << i for i in range(pof2.bit_length() - 1)]
    if recursive_doubling:
        for mask in masks:
            peer = real(v ^ mask)
            rounds.append(Round(sends=_sends(peer, 0, count, seg),
                                recvs=_recvs(peer, 0, count, seg, reduce=True)))
    else:
        lo, hi = 0, count
        given = []
        for mask in masks:  # reduce-scatter by recursive halving
            peer = real(v ^ mask)
            mid = (lo + hi) // 2
            (keep_lo, keep_hi), (give_lo, give_hi) = ((mid, hi), (lo, mid)) if v & mask else ((lo, mid), (mid, hi))
            rounds.append(Round(sends=_sends(peer, give_lo, give_hi, seg),
                                recvs=_recvs(peer, keep_lo, keep_hi, seg, reduce=True)))
            given.append((peer, give_lo, give_hi))
            lo, hi = keep_lo, keep_hi
        for peer, give_lo, give_hi in reversed(given):  # all-gather by recursive doubling
            rounds.append(Round(sends=_sends(peer, lo, hi, seg),
                                recvs=_recvs(peer, give_lo, give_hi, seg, reduce=False)))
            lo, hi = min(lo, give_lo), max(hi, give_hi)
    if rank < 2 * extra:
        rounds.append(Round(sends=_sends(rank - 1, 0, count, seg)))  # fold out
    return rounds


def build(rank: int, size: int, count: int, itemsize: int, topology=None) -> Plan:
    seg = max(1, SEGMENT_BYTES // itemsize)
    small = count * itemsize <= RECURSIVE_DOUBLING_BYTES
    rounds = schedule(rank, size, count, seg, recursive_doubling=small)
    return Plan("halving_doubling", rank, size, count, tuple(r for r in rounds if r.sends or r.recvs))
