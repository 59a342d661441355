"""Run one rank's plan over a transport.

Receives are posted in plan order, a round ahead when the plan allows it, and reduced as
soon as each segment lands, so the transfer of later segments overlaps the reduction of
earlier ones. Reduce-receives land in a few reusable scratch slots of `plan.max_segment`
elements, so scratch memory stays small whatever the message size.

Zero-copy: a transport with `irecv_view` (the shared-memory transport) may hand back the
peer's bytes where they lie instead of filling the slot; the executor reduces straight from
them and then `release`s the request, which completes the peer's send. The plan is the same.

Copy-in and copy-out ride along with the schedule when the caller passes `src` (the input)
and `out` (the result) apart from `work`. A region `work` does not hold yet is sent straight
from `src`, and its first reduce reads `src` and the payload and writes `work` in one pass
(`kernels.combine_into`), so the input is never copied as such; it is loaded into `work`
only where that cannot be (a send that spans loaded and unloaded regions, a compressing
codec, or `shared=True`, where peers read `work` in place). Each region is written to `out`
as soon as its last receive lands, straight from the wire when this rank never sends it
again (see `IoSchedule`).

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

    Receives are numbered in plan order (`Plan.steps`). A region `work` does not hold yet
    (untouched: no load, no receive so far) is sent from `src` (`send_src`, per round and
    send) and its first reduce-receive writes ``src (op) payload`` (`fresh`). Where that
    cannot be, the untouched part is loaded src -> work first: before the round's sends
    (`load_round`) or before the reduce (`load_recv`). A region is final after its last
    receive: a copy-receive lands straight in out when this rank never sends the region
    afterwards (`direct`), otherwise the region is copied work -> out right after that
    receive (`store_recv`). Regions no receive writes keep src's values (`tail`).

    `from_src=False` (a compressing codec, which rounds what it sends in place, or a work
    buffer peers read in place) loads every region before its first send or reduce.
    """

    load_round: tuple[Ranges, ...]
    send_src: tuple[tuple[bool, ...], ...]
    load_recv: tuple[Ranges, ...]
    fresh: tuple[bool, ...]
    store_recv: tuple[Ranges, ...]
    direct: tuple[bool, ...]
    tail: Ranges

    @classmethod
    def of(cls, plan: Plan, *, from_src: bool = False) -> "IoSchedule":
        """The schedule of `plan` (cached per plan object and `from_src`)."""
        key = (id(plan), from_src)
        cached = _IO_CACHE.get(key)
        if cached is not None and cached[0] is plan:
            return cached[1]
        schedule = cls._build(plan, from_src)
        if len(_IO_CACHE) >= _IO_CACHE_SIZE:
            del _IO_CACHE[next(iter(_IO_CACHE))]
        _IO_CACHE[key] = (plan, schedule)
        return schedule

    @classmethod
    def _build(cls, plan: Plan, from_src: bool) -> "IoSchedule":
        steps = [s for rnd in plan.rounds for s in rnd.sends + rnd.recvs]
        bounds = sorted({0, plan.count, *(s.lo for s in steps), *(s.hi for s in steps)})
        pieces = len(bounds) - 1
        in_work = [False] * pieces  # work holds the piece's current value
        last_recv, last_recv_round, last_send_round = [-1] * pieces, [-1] * pieces, [-1] * pieces
        load_round, send_src, load_recv, fresh = [], [], [], []
        recvs: list[Recv] = []

        def spanned(step) -> range:
            return range(bisect.bisect_left(bounds, step.lo), bisect.bisect_left(bounds, step.hi))

        def ranges(keep) -> Ranges:
            merged: list[list[int]] = []
            for i in range(pieces):
                if keep(i):
                    if merged and merged[-1][1] == bounds[i]:
                        merged[-1][1] = bounds[i + 1]
                    else:
                        merged.append([bounds[i], bounds[i + 1]])
            return tuple((lo, hi) for lo, hi in merged)

        def load(span) -> set[int]:
            """The pieces of span work lacks, now counted as loaded."""
            missing = {i for i in span if not in_work[i]}
            for i in missing:
                in_work[i] = True
            return missing

        for k, rnd in enumerate(plan.rounds):
            loaded: set[int] = set()
            round_src = []
            for send in rnd.sends:
                round_src.append(from_src and not any(in_work[i] for i in spanned(send)))
                for i in spanned(send):
                    last_send_round[i] = k
            for send, direct_from_src in zip(rnd.sends, round_src):
                if not direct_from_src:
                    loaded |= load(spanned(send))
            load_round.append(ranges(loaded.__contains__))
            send_src.append(tuple(round_src))
            for recv in rnd.recvs:
                span = spanned(recv)
                first_write = from_src and recv.reduce and not any(in_work[i] for i in span)
                fresh.append(first_write)
                missing = load(span) if recv.reduce and not first_write else set()
                load_recv.append(ranges(missing.__contains__))
                for i in span:
                    in_work[i] = True
                    last_recv[i], last_recv_round[i] = len(recvs), k
                recvs.append(recv)

        resent = [last_send_round[i] > last_recv_round[i] for i in range(pieces)]
        direct = tuple(
            not r.reduce and all(last_recv[i] == j and not resent[i] for i in spanned(r))
            for j, r in enumerate(recvs)
        )
        return cls(
            load_round=tuple(load_round),
            send_src=tuple(send_src),
            load_recv=tuple(load_recv),
            fresh=tuple(fresh),
            store_recv=tuple(
                () if direct[j] else ranges(lambda i, j=j: last_recv[i] == j) for j in range(len(recvs))
            ),
            direct=direct,
            tail=ranges(lambda i: last_recv[i] < 0),
        )


_IO_CACHE: dict[tuple[int, bool], tuple[Plan, IoSchedule]] = {}
_IO_CACHE_SIZE = 512


def run_plan(plan: Plan, work, scratch, transport, op: str, tag: int, deadline: float,
             codec=IDENTITY, staging=None, *, src=None, out=None, shared: bool = False) -> None:
    """Execute `plan` on the flat array `work`.

    `scratch` and `staging` are flat arrays of the codec's wire dtype sized by buffer_sizes;
    `op` is the elementwise kernel op (sum, max, min). Without `src`, work holds the input;
    without `out`, work receives the result. With them (flat, work's length and dtype), the
    input is read from src and the result written to out, as IoSchedule says. `shared`:
    on-node peers read `work` in place, so every send goes from work.
    """
    io = None
    if src is not None or out is not None:
        io = IoSchedule.of(plan, from_src=src is not None and not codec.staged and not shared)
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
        for i, s in enumerate(rnd.sends):
            n = s.hi - s.lo
            origin = src if io is not None and io.send_src[k][i] else work
            payload = codec.encode(origin[s.lo : s.hi], None if staging is None else staging[offset : offset + n])
            sends.append(transport.isend(payload, s.peer, tag))
            offset += n
        prefetch_round = k + 1 if k + 1 < len(plan.rounds) and plan.prefetch[k + 1] else k
        post_recvs(prefetch_round)
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
                    if codec.staged:
                        codec.decode_reduce(region, payload, op)
                    else:
                        fresh = io is not None and io.fresh[j]
                        _reduce_pair(region, src[recv.lo : recv.hi] if fresh else region, payload, op,
                                     plan.reduce_after_send[done_round], recv.peer < transport.rank)
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


def _reduce_pair(region, mine, payload, op: str, paired: bool, peer_lower: bool) -> None:
    """region = mine (op) payload; `mine` is region itself or, on a first reduce, the input.

    `paired`: the partner reduces the same pair this round (a reduce after sending). Then
    both sides put the lower rank's operand first and make the same call, in place on the
    first operand: which NaN payload a sum keeps, and which zero max/min keep, depend on
    both (NumPy's loops differ with aliasing). `payload` is our own scratch in such rounds.
    """
    if not paired:
        kernels.combine_into(region, mine, payload, op)
        return
    if mine is not region:
        kernels.copy_into(region, mine)
    if peer_lower:
        kernels.combine_into(payload, payload, region, op)
        kernels.copy_into(region, payload)
    else:
        kernels.combine_into(region, region, payload, op)


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
