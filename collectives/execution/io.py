"""When the executor moves data between the input, the work buffer and the output.

See `IoSchedule`: it lets a plan read the input where it lies and write the result where it
belongs, so a contiguous input is never copied into the work buffer as such. `Placed` is
an input or output that holds only part of the plan's elements (an all-gather's own row, a
reduce-scatter's block).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterable

from ..algorithms.plan import Plan, Recv

__all__ = ["IoSchedule", "Placed", "Ranges"]

Ranges = tuple[tuple[int, int], ...]


class Placed:
    """A flat array standing for elements [at, at + its length) of a plan's buffer: a `src`
    for run_plan when the plan reads no input elsewhere, or an `out` that takes only those
    elements (`region`). Sliced in the plan's numbering; a slice outside raises IndexError
    (an IoSchedule that reads or writes elsewhere)."""

    __slots__ = ("array", "at")

    def __init__(self, array, at: int):
        self.array, self.at = array, at

    @property
    def region(self) -> tuple[int, int]:
        return self.at, self.at + len(self.array)

    def __getitem__(self, where: slice):
        lo, hi = where.start - self.at, where.stop - self.at
        if lo < 0 or hi > len(self.array):
            raise IndexError(f"elements [{where.start}, {where.stop}) are outside the input "
                             f"placed at [{self.at}, {self.at + len(self.array)})")
        return self.array[lo:hi]


@dataclass(frozen=True)
class IoSchedule:
    """When run_plan moves data between `src`, `work` and `out` for one plan.

    Receives are numbered in plan order (`Plan.steps`). A region `work` does not hold yet
    (untouched: no load, no receive so far) is sent from `src` (`send_src`, per round and
    send) and its first reduce-receive writes ``src (op) payload`` (`fresh`). Where that
    cannot be, the untouched part is loaded src -> work first: before the round's sends
    (`load_round`) or before the reduce (`load_recv`). A region is final after its last
    receive: a copy-receive (with `from_src`, a reduce-receive too) lands straight in out
    when this rank never sends the region afterwards (`direct`), otherwise the region is
    copied work -> out right after that receive (`store_recv`). Regions no receive writes
    keep src's values (`tail`); of them, `work_tail` is what work never loads, all a run
    without out copies src -> work. `region` (lo, hi): out holds only those elements of
    the plan's (a `Placed` out: reduce_scatter's block); nothing else is written to it.

    `from_src=False` (a compressing codec, which rounds what it sends in place, or a work
    buffer peers read in place) loads every region before its first send or reduce.
    A `Plan.sends_input` plan sends every region from src and never loads for a send; its
    receives write work (or out), so a region may be received where it is also sent.
    Building one is linear in the plan's steps and the pieces they span.
    """

    load_round: tuple[Ranges, ...]
    send_src: tuple[tuple[bool, ...], ...]
    load_recv: tuple[Ranges, ...]
    fresh: tuple[bool, ...]
    store_recv: tuple[Ranges, ...]
    direct: tuple[bool, ...]
    tail: Ranges
    work_tail: Ranges

    @classmethod
    def of(cls, plan: Plan, *, from_src: bool = False,
           region: tuple[int, int] | None = None) -> "IoSchedule":
        """The schedule of `plan` (kept with the plan, per `from_src` and `region`)."""
        return plan.derived(("io", from_src, region),
                            lambda p: _Builder(p, from_src, region).build())


class _Builder:
    """Walks a plan once over the pieces between its steps' boundaries."""

    def __init__(self, plan: Plan, from_src: bool, region: tuple[int, int] | None = None):
        self.plan = plan
        self.from_src = from_src
        self.region = region or (0, plan.count)
        steps = [s for rnd in plan.rounds for s in rnd.sends + rnd.recvs]
        self.bounds = sorted({0, plan.count, *self.region, *(s.lo for s in steps),
                              *(s.hi for s in steps)})
        pieces = len(self.bounds) - 1
        self.in_work = [False] * pieces  # work holds the piece's current value
        self.last_recv = [-1] * pieces
        self.last_recv_round = [-1] * pieces
        self.last_send_round = [-1] * pieces

    def span(self, step) -> range:
        bounds = self.bounds
        return range(bisect.bisect_left(bounds, step.lo), bisect.bisect_left(bounds, step.hi))

    def ranges(self, pieces: Iterable[int]) -> Ranges:
        """The pieces (ascending) as merged element ranges."""
        bounds = self.bounds
        merged: list[list[int]] = []
        for i in pieces:
            if merged and merged[-1][1] == bounds[i]:
                merged[-1][1] = bounds[i + 1]
            else:
                merged.append([bounds[i], bounds[i + 1]])
        return tuple((lo, hi) for lo, hi in merged)

    def load(self, span: range) -> list[int]:
        """The pieces of span work lacks, now counted as loaded."""
        missing = [i for i in span if not self.in_work[i]]
        for i in missing:
            self.in_work[i] = True
        return missing

    def build(self) -> IoSchedule:
        load_round, send_src, load_recv, fresh = [], [], [], []
        recvs: list[Recv] = []
        in_work = self.in_work
        for k, rnd in enumerate(self.plan.rounds):
            if self.plan.sends_input:  # sends never read work
                load_round.append(())
                send_src.append((True,) * len(rnd.sends))
            else:
                self._sends(k, rnd, load_round, send_src)
            for recv in rnd.recvs:
                span = self.span(recv)
                first_write = self.from_src and recv.reduce and not any(in_work[i] for i in span)
                fresh.append(first_write)
                missing = self.load(span) if recv.reduce and not first_write else []
                load_recv.append(self.ranges(missing))
                for i in span:
                    in_work[i] = True
                    self.last_recv[i], self.last_recv_round[i] = len(recvs), k
                recvs.append(recv)
        return self._finish(recvs, load_round, send_src, load_recv, fresh)

    def _sends(self, k: int, rnd, load_round: list, send_src: list) -> None:
        """Where round k's sends read from, and what they need loaded first."""
        in_work = self.in_work
        round_src = []
        for send in rnd.sends:
            span = self.span(send)
            round_src.append(self.from_src and not any(in_work[i] for i in span))
            for i in span:
                self.last_send_round[i] = k
        loaded: list[int] = []
        for send, direct_from_src in zip(rnd.sends, round_src):
            if not direct_from_src:
                loaded += self.load(self.span(send))
        load_round.append(self.ranges(sorted(loaded)))
        send_src.append(tuple(round_src))

    def _finish(self, recvs, load_round, send_src, load_recv, fresh) -> IoSchedule:
        last_recv, bounds, (lo, hi) = self.last_recv, self.bounds, self.region
        resent = [s > r for s, r in zip(self.last_send_round, self.last_recv_round)]
        inside = [lo <= bounds[i] and bounds[i + 1] <= hi for i in range(len(bounds) - 1)]

        def owned(j: int, span: range) -> list[int]:
            return [i for i in span if last_recv[i] == j and inside[i]]

        spans = [self.span(r) for r in recvs]
        direct = tuple((not r.reduce or self.from_src)
                       and all(last_recv[i] == j and not resent[i] and inside[i] for i in span)
                       for j, (r, span) in enumerate(zip(recvs, spans)))
        return IoSchedule(
            load_round=tuple(load_round),
            send_src=tuple(send_src),
            load_recv=tuple(load_recv),
            fresh=tuple(fresh),
            store_recv=tuple(() if direct[j] else self.ranges(owned(j, span))
                             for j, span in enumerate(spans)),
            direct=direct,
            tail=self.ranges(i for i, j in enumerate(last_recv) if j < 0 and inside[i]),
            work_tail=self.ranges(i for i, j in enumerate(last_recv)
                                  if j < 0 and not self.in_work[i]),
        )
