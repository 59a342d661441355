"""Alltoall by pairwise exchange.

Work holds p rows of m elements (split_bounds(0, p m, p)). In round k = 1 .. p-1 rank r
sends its input's row (r + k) mod p to rank (r + k) mod p and receives rank (r - k) mod p's
row r into its row (r - k) mod p. Sends read the input (`Plan.sends_input`), so with p = 2
a row goes out and comes in the same round; the own row is copied from the input.

Bytes sent per rank: (p-1)/p n (n = p m, the whole buffer). Latency terms: p - 1 alpha.
"""
from __future__ import annotations

from .plan import Plan, Round, make_plan, recv_steps, send_steps, split_bounds
from .ring import segment_length

__all__ = ["build"]


def build(rank: int, size: int, count: int, itemsize: int, topology=None, root: int = 0) -> Plan:
    """Alltoall of `size` rows making up `count` elements."""
    if count % size:
        raise ValueError(f"alltoall of {count} elements: need {size} rows of equal length")
    seg = segment_length(itemsize)
    rows = split_bounds(0, count, size)
    rounds = []
    for k in range(1, size):
        to, source = (rank + k) % size, (rank - k) % size
        rounds.append(Round(sends=send_steps(to, (rows[to],), seg),
                            recvs=recv_steps(source, (rows[source],), seg, reduce=False)))
    return make_plan("pairwise", rank, size, count, rounds, collective="alltoall",
                     sends_input=True)
