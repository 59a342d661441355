"""Run one rank's plan over a transport.

Receives are posted as `Posting` says (plan order, a round ahead when the plan allows it,
a few scratch slots for reduce-receives) and applied as soon as each segment lands, so the
transfer of later segments overlaps the reduction of earlier ones. Scratch memory stays
small whatever the message size.

Zero-copy: a transport with the `shared` capability (the shared-memory transport) may hand
back the peer's bytes where they lie instead of filling the slot; the executor reduces
straight from them and then `release`s the request, which completes the peer's send. The
plan is the same.

Copy-in and copy-out ride along with the schedule when the caller passes `src` (the input)
and `out` (the result) apart from `work` (`IoSchedule`). What travels on the wire is the
codec's business (`execution.codec`).

If anything fails mid-plan (a timeout, a peer's notice) every request still in flight is
handed to `transport.abandon`, so no late message lands in memory the caller gets back.

Example::

    runner = PlanRunner(transport)
    runner.run(plan, work, "sum", tag, deadline)
"""
from __future__ import annotations

from typing import Any

import numpy as np

import kernels

from ..algorithms.plan import Plan
from ..errors import CollectiveTimeout, PeerError
from .codec import IDENTITY
from .io import IoSchedule, Placed, Ranges
from .posting import SCRATCH_SLOTS, Posting

__all__ = ["PlanRunner", "buffer_sizes", "run_plan"]


def buffer_sizes(plan: Plan, codec=IDENTITY) -> tuple[int, int]:
    """(scratch, staging) element counts, in the wire dtype, that run_plan needs for `plan`."""
    if not codec.staged:
        return SCRATCH_SLOTS * plan.max_segment, 0
    return plan.derived("staged buffers", _staged_sizes)


def _staged_sizes(plan: Plan) -> tuple[int, int]:
    longest_recv = max((r.hi - r.lo for rnd in plan.rounds for r in rnd.recvs), default=0)
    round_sends = max((sum(s.hi - s.lo for s in rnd.sends) for rnd in plan.rounds), default=0)
    return SCRATCH_SLOTS * longest_recv, round_sends


class PlanRunner:
    """Runs plans over one transport with buffers it owns and reuses (scratch, staging, and
    the transport's shared work buffer); one per transport of a communicator.

    `buffer(purpose, like, dtype, n)` is also how the layers above get reusable flat arrays.
    """

    def __init__(self, transport):
        self.transport = transport
        self._buffers: dict[tuple[str, str, np.dtype], Any] = {}

    def buffer(self, purpose: str, like, dtype, elements: int):
        """A reusable flat buffer for `purpose` on like's array module; grows, never shrinks."""
        xp = kernels.array_module(like)
        key = (purpose, xp.__name__, np.dtype(dtype))
        buf = self._buffers.get(key)
        if buf is None or buf.size < elements:
            buf = self._buffers[key] = xp.empty(elements, dtype)
        return buf[:elements]

    def run(self, plan: Plan, work, op: str, tag: int, deadline: float, codec=IDENTITY, *,
            src=None, out=None, copy_untouched: bool = True) -> None:
        """Run `plan` on the flat `work` (the result lands there, or in `out`: see run_plan);
        `src`: read the input from there instead of work (required by a `sends_input`
        plan); `copy_untouched` False leaves the regions no receive writes as they are in
        work (see run_plan)."""
        wire = codec.wire_dtype(work.dtype)
        scratch_len, staging_len = buffer_sizes(plan, codec)
        # (no reduce-receives, as in a gather: no scratch to look up)
        scratch = self.buffer("scratch", work, wire, scratch_len) if scratch_len else work[:0]
        staging = self.buffer("staging", work, wire, staging_len) if codec.staged else None
        shared = self.transport.shared
        window = None
        # A plan whose sends read the input has no use for a window peers read in place.
        if shared is not None and not plan.sends_input and kernels.array_module(work) is np:
            # Every rank of a node asks at every plan run: a growing window is collective.
            window = shared.work_buffer(work.size, work.dtype, deadline=deadline)
        if window is None:
            run_plan(plan, work, scratch, self.transport, op, tag, deadline, codec, staging,
                     src=src, out=out, copy_untouched=copy_untouched)
        else:  # on-node peers read our data from the shared window
            run_plan(plan, window, scratch, self.transport, op, tag, deadline, codec, staging,
                     src=work if src is None else src, out=work if out is None else out,
                     shared=True, copy_untouched=copy_untouched)


def run_plan(plan: Plan, work, scratch, transport, op: str, tag: int, deadline: float,
             codec=IDENTITY, staging=None, *, src=None, out=None, shared: bool = False,
             copy_untouched: bool = True) -> None:
    """Execute `plan` on the flat array `work`.

    `scratch` and `staging` are flat arrays of the codec's wire dtype sized by buffer_sizes;
    `op` is the elementwise kernel op (sum, max, min). Without `src`, work holds the input;
    without `out`, work receives the result. With them (flat, work's length and dtype; src
    may be a `Placed` part where the plan reads no input elsewhere), the input is read from
    src and the result written to out, as IoSchedule says. `shared`:
    on-node peers read `work` in place, so every send goes from work.

    A `plan.sends_input` plan (alltoall) needs `src`: every send reads src, receives land in
    work (or out), and the regions no receive writes are copied from src (unless
    `copy_untouched` is False: a caller that reads its own row from src). It takes neither
    `shared` nor a staged codec, which would send from work or round src in place.
    """
    if plan.sends_input and (src is None or shared or codec.staged):
        raise ValueError(f"{plan.algorithm} {plan.collective} plan sends its input: it needs "
                         "src, and neither a shared work buffer nor a compressing codec")
    _Run(plan, work, scratch, transport, op, tag, deadline, codec, staging, src, out,
         shared, copy_untouched).execute()


class _Run:
    """One execution of a plan: its posted requests and free slots."""

    def __init__(self, plan: Plan, work, scratch, transport, op: str, tag: int, deadline: float,
                 codec, staging, src, out, shared: bool, copy_untouched: bool = True):
        self.plan, self.work, self.transport = plan, work, transport
        self.copy_untouched = copy_untouched
        self.op, self.tag, self.deadline = op, tag, deadline
        self.codec, self.staging, self.src, self.out = codec, staging, src, out
        self.io = None
        if src is not None or out is not None:
            self.io = IoSchedule.of(plan, from_src=src is not None and not codec.staged
                                    and not shared,
                                    region=out.region if isinstance(out, Placed) else None)
        slot_len = len(scratch) // SCRATCH_SLOTS
        self.slots = [scratch[i * slot_len: (i + 1) * slot_len]
                      for i in range(SCRATCH_SLOTS)] if slot_len else []
        self.free_slots = list(range(SCRATCH_SLOTS))
        self.posting = posting = Posting.of(plan, staged=codec.staged)
        self.recvs = posting.recvs
        self.labels = _labels(plan)
        self.views = transport.shared
        self.next_recv = 0
        self.landed = [0] * len(plan.rounds)  # receives applied, per round
        self.requests: list[Any] = []
        # (round, recv index, scratch slot, is a view request) per posted receive
        self.posted: list[tuple[int, int, int | None, bool]] = []
        self.sends: list[Any] = []

    def execute(self) -> None:
        try:
            for k, rnd in enumerate(self.plan.rounds):
                self._round(k, rnd)
            if not self.plan.rounds:
                self._copy_tail()
        except BaseException:
            self.transport.abandon(self.sends, self.requests)
            raise

    def _move(self, ranges: Ranges, dst, source) -> None:
        if dst is not None and source is not None:
            for lo, hi in ranges:
                kernels.copy_into(dst[lo:hi], source[lo:hi])

    def _target(self, j: int):
        io = self.io
        return self.out if self.out is not None and io is not None and io.direct[j] else self.work

    def _post(self, up_to: int, key) -> None:
        """Post receives in plan order while `key(i) <= up_to` and slots allow."""
        posting, plan = self.posting, self.plan
        while self.next_recv < len(self.recvs):
            j = self.next_recv
            needs_slot = posting.needs_slot[j]
            if key[j] > up_to or (needs_slot and not self.free_slots):
                return
            recv, k = self.recvs[j], posting.rounds[j]
            # A view holds the peer's send open until released: not where we wait for our
            # own sends before reducing (the peer may be waiting for us the same way).
            view = needs_slot and self.views is not None and not plan.reduce_after_send[k]
            if needs_slot:
                slot = self.free_slots.pop()
                buf = self.slots[slot][: recv.hi - recv.lo]
                post = self.views.irecv_view if view else self.transport.irecv
                request = post(buf, recv.peer, self.tag)
            else:
                slot = None
                buf = self._target(j)[recv.lo: recv.hi]
                request = self.transport.irecv(buf, recv.peer, self.tag)
            self.requests.append(request)
            self.posted.append((k, j, slot, view))
            self.next_recv += 1

    def _round(self, k: int, rnd) -> None:
        io, codec, staging, transport = self.io, self.codec, self.staging, self.transport
        if io is not None and io.load_round[k]:
            self._move(io.load_round[k], self.work, self.src)
        posting, recvs = self.posting, self.recvs
        if self.next_recv < len(recvs) and posting.rounds[self.next_recv] <= k:
            self._post(k, posting.rounds)
        offset = 0
        sends, tag = self.sends, self.tag
        for i, s in enumerate(rnd.sends):
            n = s.hi - s.lo
            origin = self.src if io is not None and io.send_src[k][i] else self.work
            payload = codec.encode(origin[s.lo: s.hi],
                                   None if staging is None else staging[offset: offset + n])
            sends.append(transport.isend(payload, s.peer, tag))
            offset += n
        if self.next_recv < len(recvs) and posting.opens[self.next_recv] <= k:
            self._post(k, posting.opens)
        if k == 0:  # while the first messages are in flight
            self._copy_tail()
        if self.plan.reduce_after_send[k]:
            self._wait_sends(k)
        landed, expected = self.landed, len(rnd.recvs)
        requests, waiting = self.requests, self.labels[k][0]
        while landed[k] < expected:
            try:
                i = transport.wait_any(requests, self.deadline, waiting)
            except CollectiveTimeout:
                raise self._stalled(k) from None
            except PeerError as error:
                raise PeerError(f"{error}; {self._stalled(k).args[0].split(': ', 1)[1]}") from None
            request = requests.pop(i)
            self._apply(self.posted.pop(i), request)
            if self.next_recv < len(recvs):
                self._post(k, posting.opens)
        self._wait_sends(k)

    def _apply(self, posted, request) -> None:
        done_round, j, slot, view = posted
        recv, io = self.recvs[j], self.io
        if slot is not None:
            payload = self.views.view(request) if view else self.slots[slot][: recv.hi - recv.lo]
            target = self._target(j)
            region = target[recv.lo: recv.hi]
            if recv.reduce:
                if io is not None and io.load_recv[j]:
                    self._move(io.load_recv[j], self.work, self.src)
                paired = self.plan.reduce_after_send[done_round]
                if self.codec.staged and paired:  # widened first: then as uncompressed
                    wide = kernels.array_module(region).empty(region.shape, region.dtype)
                    self.codec.decode_copy(wide, payload)
                    _reduce_pair(region, region, wide, self.op, True,
                                 recv.peer < self.transport.rank)
                elif self.codec.staged:
                    self.codec.decode_reduce(region, payload, self.op)
                else:
                    fresh = io is not None and io.fresh[j]
                    mine = (self.src[recv.lo: recv.hi] if fresh else region
                            if target is self.work else self.work[recv.lo: recv.hi])
                    _reduce_pair(region, mine, payload, self.op, paired,
                                 recv.peer < self.transport.rank)
            else:
                self.codec.decode_copy(region, payload)
            if view:
                self.views.release(request)
            self.free_slots.append(slot)
        if io is not None and io.store_recv[j]:
            self._move(io.store_recv[j], self.out, self.work)
        self.landed[done_round] += 1

    def _copy_tail(self) -> None:
        """The regions no receive writes keep src's values. No step writes them, and no
        send reads them from out or from what work never loads: the copy runs while the
        first round's messages are in flight."""
        io = self.io
        if io is not None and self.copy_untouched:
            if self.out is None:
                self._move(io.work_tail, self.work, self.src)
            else:
                self._move(io.tail, self.out, self.work if self.src is None else self.src)

    def _wait_sends(self, k: int) -> None:
        if not self.sends:
            return
        plan = self.plan
        try:
            self.transport.wait_all(self.sends, self.deadline, self.labels[k][1])
        except CollectiveTimeout:
            peers = sorted({s.peer for s in plan.rounds[k].sends})
            raise CollectiveTimeout(
                f"rank {self.transport.rank}: {plan.algorithm} round {k + 1}/{len(plan.rounds)}: "
                f"rank(s) {peers} did not take our data in time"
            ) from None
        self.sends = []

    def _stalled(self, k: int) -> CollectiveTimeout:
        plan = self.plan
        waiting = sorted({self.recvs[j].peer for rk, j, *_ in self.posted if rk == k})
        return CollectiveTimeout(
            f"rank {self.transport.rank}: {plan.algorithm} round {k + 1}/{len(plan.rounds)}: "
            f"no data from rank(s) {waiting} in time"
        )


def _labels(plan: Plan) -> tuple[tuple[str, str], ...]:
    """Per round, what a wait names: (its receives, its sends); kept with the plan."""
    return plan.derived("wait labels", lambda p: tuple(
        (f"{p.algorithm} round {k}", f"{p.algorithm} round {k} sends")
        for k in range(len(p.rounds))))


def _reduce_pair(region, mine, payload, op: str, paired: bool, peer_lower: bool) -> None:
    """region = mine (op) payload; `mine` is region itself, the input (on a first reduce) or
    work's region (a reduce straight into out).

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
