"""Run one rank's plan over a transport.

Receives are posted in plan order, a round ahead when the plan allows it, and reduced as
soon as each segment lands, so the transfer of later segments overlaps the reduction of
earlier ones. Reduce-receives land in a few reusable scratch slots of `plan.max_segment`
elements, so scratch memory stays small whatever the message size.
"""
from __future__ import annotations

from typing import Any

import kernels

from ..errors import CollectiveTimeout
from .plan import Plan, Recv

__all__ = ["SCRATCH_SLOTS", "run_plan"]

SCRATCH_SLOTS = 4


def run_plan(plan: Plan, work, scratch, transport, op: str, tag: int, deadline: float) -> None:
    """Execute `plan` on the flat array `work` in place.

    `scratch` holds SCRATCH_SLOTS * plan.max_segment elements of work's dtype; `op` is the
    elementwise kernel op (sum, max, min).
    """
    slots = [scratch[i * plan.max_segment : (i + 1) * plan.max_segment] for i in range(SCRATCH_SLOTS)]
    free_slots = list(range(SCRATCH_SLOTS))
    pending = [(k, r) for k, rnd in enumerate(plan.rounds) for r in rnd.recvs]
    next_recv = 0
    requests: list[Any] = []
    posted: list[tuple[int, Recv, int | None]] = []  # (round, step, scratch slot) per request

    def post_recvs(up_to_round: int) -> None:
        nonlocal next_recv
        while next_recv < len(pending):
            k, recv = pending[next_recv]
            if k > up_to_round or (recv.reduce and not free_slots):
                return
            slot = free_slots.pop() if recv.reduce else None
            buf = slots[slot][: recv.hi - recv.lo] if recv.reduce else work[recv.lo : recv.hi]
            requests.append(transport.irecv(buf, recv.peer, tag))
            posted.append((k, recv, slot))
            next_recv += 1

    for k, rnd in enumerate(plan.rounds):
        post_recvs(k)
        sends = [transport.isend(work[s.lo : s.hi], s.peer, tag) for s in rnd.sends]
        prefetch_round = k + 1 if k + 1 < len(plan.rounds) and plan.prefetch[k + 1] else k
        post_recvs(prefetch_round)
        remaining = len(rnd.recvs)
        while remaining:
            try:
                i = transport.wait_any(requests, deadline, f"{plan.algorithm} round {k}")
            except CollectiveTimeout:
                raise _stalled(plan, k, transport.rank, posted) from None
            done_round, recv, slot = posted.pop(i)
            del requests[i]
            if slot is not None:
                kernels.reduce_into(work[recv.lo : recv.hi], slots[slot][: recv.hi - recv.lo], op)
                free_slots.append(slot)
            remaining -= done_round == k
            post_recvs(prefetch_round)
        try:
            transport.wait_all(sends, deadline, f"{plan.algorithm} round {k} sends")
        except CollectiveTimeout:
            peers = sorted({s.peer for s in rnd.sends})
            raise CollectiveTimeout(
                f"rank {transport.rank}: {plan.algorithm} round {k + 1}/{len(plan.rounds)}: "
                f"rank(s) {peers} did not take our data in time"
            ) from None


def _stalled(plan: Plan, k: int, rank: int, posted) -> CollectiveTimeout:
    waiting = sorted({recv.peer for rk, recv, _ in posted if rk == k})
    return CollectiveTimeout(
        f"rank {rank}: {plan.algorithm} round {k + 1}/{len(plan.rounds)}: "
        f"no data from rank(s) {waiting} in time"
    )
