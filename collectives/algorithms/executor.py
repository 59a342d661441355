"""Run one rank's plan over a transport.

Receives are posted in plan order, a round ahead when the plan allows it, and reduced as
soon as each segment lands, so the transfer of later segments overlaps the reduction of
earlier ones. Reduce-receives land in a few reusable scratch slots of `plan.max_segment`
elements, so scratch memory stays small whatever the message size.

Zero-copy: a transport with `irecv_view` (the shared-memory transport) may hand back the
peer's bytes where they lie instead of filling the slot; the executor reduces straight from
them and then `release`s the request, which completes the peer's send. The plan is the same.

Copy-in and copy-out ride along with the schedule when the caller passes `src` (the input)
and `out` (the result) apart from `work`: each region of `src` is loaded into `work` just
before its first send or reduce (never, if a copy-receive overwrites it first), and each
region is written to `out` as soon as its last receive lands, straight from the wire when
this rank never sends it again (see `IoSchedule`).

What travels on the wire is the codec's business: `Identity` sends the work buffer's own
elements; a compressing codec (collectives.compression) encodes each send into a staging
buffer and decodes each receive into the accumulator.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import kernels

from ..errors import CollectiveTimeout
from .plan import Plan, Recv

__all__ = ["SCRATCH_SLOTS", "IDENTITY", "Identity", "IoSchedule", "buffer_sizes", "run_plan"]

SCRATCH_SLOTS = 4

Ranges = tuple[tuple[int, int], ...]


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


@dataclass(frozen=True)
class IoSchedule:
    """When run_plan moves data between `src`, `work` and `out` for one plan.

    Receives are numbered in plan order (`Plan.steps`). A region is loaded from src at its
    first touch if that is a send (`load_round`, before the round's sends) or a reduce-receive
    (`load_recv`, before the reduce). It is final after its last receive: a copy-receive lands
    straight in out when this rank never sends the region afterwards (`direct`), otherwise
    the region is copied work -> out right after that receive (`store_recv`). Regions no
    receive writes keep src's values (`tail`).
    """

    load_round: tuple[Ranges, ...]
    load_recv: tuple[Ranges, ...]
    store_recv: tuple[Ranges, ...]
    direct: tuple[bool, ...]
    tail: Ranges

    @classmethod
    def of(cls, plan: Plan) -> "IoSchedule":
        """The schedule of `plan` (cached per plan object)."""
        cached = _IO_CACHE.get(id(plan))
        if cached is not None and cached[0] is plan:
            return cached[1]
        schedule = cls._build(plan)
        if len(_IO_CACHE) >= _IO_CACHE_SIZE:
            del _IO_CACHE[next(iter(_IO_CACHE))]
        _IO_CACHE[id(plan)] = (plan, schedule)
        return schedule

    @classmethod
    def _build(cls, plan: Plan) -> "IoSchedule":
        steps = [s for rnd in plan.rounds for s in rnd.sends + rnd.recvs]
        bounds = sorted({0, plan.count, *(s.lo for s in steps), *(s.hi for s in steps)})
        pieces = len(bounds) - 1
        first: list[tuple[str, int] | None] = [None] * pieces  # ("send", round) / ("reduce"|"copy", recv)
        last_recv, last_recv_round, last_send_round = [-1] * pieces, [-1] * pieces, [-1] * pieces
        recvs: list[Recv] = []

        def spanned(step):
            return range(bisect.bisect_left(bounds, step.lo), bisect.bisect_left(bounds, step.hi))

        for k, rnd in enumerate(plan.rounds):
            for send in rnd.sends:
                for i in spanned(send):
                    first[i] = first[i] or ("send", k)
                    last_send_round[i] = k
            for recv in rnd.recvs:
                for i in spanned(recv):
                    first[i] = first[i] or ("reduce" if recv.reduce else "copy", len(recvs))
                    last_recv[i], last_recv_round[i] = len(recvs), k
                recvs.append(recv)

        def ranges(keep) -> Ranges:
            merged: list[list[int]] = []
            for i in range(pieces):
                if keep(i):
                    if merged and merged[-1][1] == bounds[i]:
                        merged[-1][1] = bounds[i + 1]
                    else:
                        merged.append([bounds[i], bounds[i + 1]])
            return tuple((lo, hi) for lo, hi in merged)

        resent = [last_send_round[i] > last_recv_round[i] for i in range(pieces)]
        direct = tuple(
            not r.reduce and all(last_recv[i] == j and not resent[i] for i in spanned(r))
            for j, r in enumerate(recvs)
        )
        return cls(
            load_round=tuple(ranges(lambda i, k=k: first[i] == ("send", k)) for k in range(len(plan.rounds))),
            load_recv=tuple(ranges(lambda i, j=j: first[i] == ("reduce", j)) for j in range(len(recvs))),
            store_recv=tuple(
                () if direct[j] else ranges(lambda i, j=j: last_recv[i] == j) for j in range(len(recvs))
            ),
            direct=direct,
            tail=ranges(lambda i: last_recv[i] < 0),
        )


_IO_CACHE: dict[int, tuple[Plan, IoSchedule]] = {}
_IO_CACHE_SIZE = 512


def run_plan(plan: Plan, work, scratch, transport, op: str, tag: int, deadline: float,
             codec=IDENTITY, staging=None, *, src=None, out=None) -> None:
    """Execute `plan` on the flat array `work`.

    `scratch` and `staging` are flat arrays of the codec's wire dtype sized by buffer_sizes;
    `op` is the elementwise kernel op (sum, max, min). Without `src`, work holds the input;
    without `out`, work receives the result. With them (flat, work's length and dtype), the
    input is read from src and the result written to out, as IoSchedule says.
    """
    io = IoSchedule.of(plan) if src is not None or out is not None else None
    scratch_len, _ = buffer_sizes(plan, codec)
    slot_len = scratch_len // SCRATCH_SLOTS
    slots = [scratch[i * slot_len : (i + 1) * slot_len] for i in range(SCRATCH_SLOTS)]
    free_slots = list(range(SCRATCH_SLOTS))
    pending = [(k, r) for k, rnd in enumerate(plan.rounds) for r in rnd.recvs]
    irecv_view = getattr(transport, "irecv_view", None)
    next_recv = 0
    landed = [0] * len(plan.rounds)  # receives applied, per round (prefetched ones land early)
    requests: list[Any] = []
    # (round, step, recv index, scratch slot, request, is a view request) per posted receive
    posted: list[tuple[int, Recv, int, int | None, Any, bool]] = []

    def move(ranges: Ranges, dst, source) -> None:
        if dst is not None and source is not None:
            for lo, hi in ranges:
                kernels.copy_into(dst[lo:hi], source[lo:hi])

    def target(j: int):
        return out if out is not None and io is not None and io.direct[j] else work

    def post_recvs(up_to_round: int) -> None:
        nonlocal next_recv
        while next_recv < len(pending):
            k, recv = pending[next_recv]
            needs_slot = recv.reduce or codec.staged
            if k > up_to_round or (needs_slot and not free_slots):
                return
            # A view holds the peer's send open until released: not where we wait for our
            # own sends before reducing (the peer may be waiting for us the same way).
            view = needs_slot and irecv_view is not None and not plan.reduce_after_send[k]
            if needs_slot:
                slot = free_slots.pop()
                buf = slots[slot][: recv.hi - recv.lo]
                request = (irecv_view if view else transport.irecv)(buf, recv.peer, tag)
            else:
                slot = None
                request = transport.irecv(target(next_recv)[recv.lo : recv.hi], recv.peer, tag)
            requests.append(request)
            posted.append((k, recv, next_recv, slot, request, view))
            next_recv += 1

    for k, rnd in enumerate(plan.rounds):
        if io is not None:
            move(io.load_round[k], work, src)
        post_recvs(k)
        sends, offset = [], 0
        for s in rnd.sends:
            n = s.hi - s.lo
            payload = codec.encode(work[s.lo : s.hi], None if staging is None else staging[offset : offset + n])
            sends.append(transport.isend(payload, s.peer, tag))
            offset += n
        prefetch_round = k + 1 if k + 1 < len(plan.rounds) and plan.prefetch[k + 1] else k
        post_recvs(prefetch_round)
        swap = plan.reduce_after_send[k] and not codec.staged
        if plan.reduce_after_send[k]:
            _wait_sends(plan, k, transport, sends, deadline)
            sends = []
        while landed[k] < len(rnd.recvs):
            try:
                i = transport.wait_any(requests, deadline, f"{plan.algorithm} round {k}")
            except CollectiveTimeout:
                raise _stalled(plan, k, transport.rank, posted) from None
            done_round, recv, j, slot, request, view = posted.pop(i)
            del requests[i]
            if slot is not None:
                payload = transport.view(request) if view else slots[slot][: recv.hi - recv.lo]
                region = target(j)[recv.lo : recv.hi]
                if recv.reduce:
                    if io is not None:
                        move(io.load_recv[j], work, src)
                    if swap and recv.peer < transport.rank:
                        # Both partners reduce the same pair here: put the lower rank's
                        # operand first on both sides, so max/min of +-0 and NaN payloads
                        # give identical bits (payload is our own scratch in such rounds).
                        kernels.reduce_into(payload, region, op)
                        kernels.copy_into(region, payload)
                    else:
                        codec.decode_reduce(region, payload, op)
                else:
                    codec.decode_copy(region, payload)
                if view:
                    transport.release(request)
                free_slots.append(slot)
            if io is not None:
                move(io.store_recv[j], out, work)
            landed[done_round] += 1
            post_recvs(prefetch_round)
        _wait_sends(plan, k, transport, sends, deadline)
    if io is not None:
        if out is None:
            move(io.tail, work, src)
        else:
            move(io.tail, out, work if src is None else src)


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
    waiting = sorted({recv.peer for rk, recv, *_ in posted if rk == k})
    return CollectiveTimeout(
        f"rank {rank}: {plan.algorithm} round {k + 1}/{len(plan.rounds)}: "
        f"no data from rank(s) {waiting} in time"
    )
