"""Run one rank's plan over a transport.

Receives are posted in plan order, a round ahead when the plan allows it, and reduced as
soon as each segment lands, so the transfer of later segments overlaps the reduction of
earlier ones. Reduce-receives land in a few reusable scratch slots of `plan.max_segment`
elements, so scratch memory stays small whatever the message size.

What travels on the wire is the codec's business: `Identity` sends the work buffer's own
elements; a compressing codec (collectives.compression) encodes each send into a staging
buffer and decodes each receive into the accumulator.
"""
from __future__ import annotations

from typing import Any

import kernels

from ..errors import CollectiveTimeout
from .plan import Plan, Recv

__all__ = ["SCRATCH_SLOTS", "Identity", "Buffers", "buffer_sizes", "run_plan"]

SCRATCH_SLOTS = 4


class Identity:
    """The uncompressed wire: payload elements are work elements."""

    staged = False  # sends go straight from work, copy-receives straight into it

    def wire_dtype(self, work_dtype):
        return work_dtype

    def encode(self, region, staging):
        return region

    def decode_reduce(self, region, payload, op: str) -> None:
        kernels.reduce_into(region, payload, op)

    def decode_copy(self, region, payload) -> None:
        kernels.copy_into(region, payload)


IDENTITY = Identity()


def buffer_sizes(plan: Plan, codec=IDENTITY) -> tuple[int, int]:
    """(scratch, staging) element counts, in the wire dtype, that run_plan needs for `plan`."""
    if not codec.staged:
        return SCRATCH_SLOTS * plan.max_segment, 0
    longest_recv = max((r.hi - r.lo for rnd in plan.rounds for r in rnd.recvs), default=0)
    round_sends = max((sum(s.hi - s.lo for s in rnd.sends) for rnd in plan.rounds), default=0)
    return SCRATCH_SLOTS * longest_recv, round_sends


def run_plan(plan: Plan, work, scratch, transport, op: str, tag: int, deadline: float,
             codec=IDENTITY, staging=None) -> None:
    """Execute `plan` on the flat array `work` in place.

    `scratch` and `staging` are flat arrays of the codec's wire dtype sized by buffer_sizes;
    `op` is the elementwise kernel op (sum, max, min).
    """
    scratch_len, _ = buffer_sizes(plan, codec)
    slot_len = scratch_len // SCRATCH_SLOTS
    slots = [scratch[i * slot_len : (i + 1) * slot_len] for i in range(SCRATCH_SLOTS)]
    free_slots = list(range(SCRATCH_SLOTS))
    pending = [(k, r) for k, rnd in enumerate(plan.rounds) for r in rnd.recvs]
    next_recv = 0
    requests: list[Any] = []
    posted: list[tuple[int, Recv, int | None]] = []  # (round, step, scratch slot) per request

    def post_recvs(up_to_round: int) -> None:
        nonlocal next_recv
        while next_recv < len(pending):
            k, recv = pending[next_recv]
            needs_slot = recv.reduce or codec.staged
            if k > up_to_round or (needs_slot and not free_slots):
                return
            slot = free_slots.pop() if needs_slot else None
            buf = work[recv.lo : recv.hi] if slot is None else slots[slot][: recv.hi - recv.lo]
            requests.append(transport.irecv(buf, recv.peer, tag))
            posted.append((k, recv, slot))
            next_recv += 1

    for k, rnd in enumerate(plan.rounds):
        post_recvs(k)
        sends, offset = [], 0
        for s in rnd.sends:
            n = s.hi - s.lo
            payload = codec.encode(work[s.lo : s.hi], None if staging is None else staging[offset : offset + n])
            sends.append(transport.isend(payload, s.peer, tag))
            offset += n
        prefetch_round = k + 1 if k + 1 < len(plan.rounds) and plan.prefetch[k + 1] else k
        post_recvs(prefetch_round)
        if plan.reduce_after_send[k]:
            _wait_sends(plan, k, transport, sends, deadline)
            sends = []
        remaining = len(rnd.recvs)
        while remaining:
            try:
                i = transport.wait_any(requests, deadline, f"{plan.algorithm} round {k}")
            except CollectiveTimeout:
                raise _stalled(plan, k, transport.rank, posted) from None
            done_round, recv, slot = posted.pop(i)
            del requests[i]
            if slot is not None:
                payload = slots[slot][: recv.hi - recv.lo]
                region = work[recv.lo : recv.hi]
                if recv.reduce:
                    codec.decode_reduce(region, payload, op)
                else:
                    codec.decode_copy(region, payload)
                free_slots.append(slot)
            remaining -= done_round == k
            post_recvs(prefetch_round)
        _wait_sends(plan, k, transport, sends, deadline)


def _wait_sends(plan: Plan, k: int, transport, sends: list, deadline: float) -> None:
    try:
        transport.wait_all(sends, deadline, f"{plan.algorithm} round {k} sends")
    except CollectiveTimeout:
        peers = sorted({s.peer for s in plan.rounds[k].sends})
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
