"""Plans: one rank's schedule of a collective as plain data.

A plan is a sequence of rounds. A round holds sends and receives over element ranges
`[lo, hi)` of the flat work buffer; the steps of a round may run concurrently. A send of
round k reads data that is final at the end of round k-1. Between two ranks, sends and
receives are issued in plan order, so messages match without per-step tags.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

__all__ = ["Send", "Recv", "Round", "Plan", "chunk_bounds", "segments"]


@dataclass(frozen=True, slots=True)
class Send:
    """Send `work[lo:hi]` to `peer`."""

    peer: int
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Recv:
    """Receive `hi - lo` elements from `peer`: reduce them into `work[lo:hi]`, or copy there."""

    peer: int
    lo: int
    hi: int
    reduce: bool


@dataclass(frozen=True, slots=True)
class Round:
    sends: tuple[Send, ...] = ()
    recvs: tuple[Recv, ...] = ()


class _Cover:
    """The union of some element ranges, to ask whether another range meets it (log time)."""

    def __init__(self, steps: Iterable[Send | Recv]):
        merged: list[list[int]] = []
        for lo, hi in sorted((s.lo, s.hi) for s in steps if s.hi > s.lo):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._starts = [lo for lo, _ in merged]
        self._ends = [hi for _, hi in merged]

    def meets(self, step: Send | Recv) -> bool:
        """Whether `[step.lo, step.hi)` shares an element with the union."""
        if step.hi <= step.lo:
            return False
        i = bisect.bisect_left(self._ends, step.lo + 1)  # first range ending after step.lo
        return i < len(self._starts) and self._starts[i] < step.hi


@dataclass(frozen=True)
class Plan:
    """One rank's schedule.

    `prefetch[k]` is True when round k's receives may be posted while round k-1 runs: none
    of them touches a region that round k-1 sends or receives.
    `reduce_after_send[k]` is True when a reduce-receive of round k overlaps one of its sends
    (recursive doubling): the executor then waits for the sends before reducing.
    `max_segment` is the longest reduce-receive, which sizes the executor's scratch slots.
    Building one is O(steps log steps).
    """

    algorithm: str
    rank: int
    size: int
    count: int
    rounds: tuple[Round, ...]
    prefetch: tuple[bool, ...] = field(init=False)
    reduce_after_send: tuple[bool, ...] = field(init=False)
    max_segment: int = field(init=False)

    def __post_init__(self) -> None:
        sent = [_Cover(rnd.sends) for rnd in self.rounds]
        for k, (rnd, cover) in enumerate(zip(self.rounds, sent)):
            for step in rnd.sends + rnd.recvs:
                if not (0 <= step.lo <= step.hi <= self.count and 0 <= step.peer < self.size):
                    raise ValueError(f"{self.algorithm} plan of rank {self.rank}, round {k}: "
                                     f"{step} lies outside [0, {self.count}) or names no rank")
            if any(not r.reduce and cover.meets(r) for r in rnd.recvs):
                raise ValueError(f"{self.algorithm} plan of rank {self.rank}, round {k}: a "
                                 "copy-receive lands in a region the round also sends")
        guard = tuple(any(r.reduce and cover.meets(r) for r in rnd.recvs)
                      for rnd, cover in zip(self.rounds, sent))
        prefetch = [False]
        for before, after in zip(self.rounds, self.rounds[1:]):
            touched = _Cover(before.sends + before.recvs)
            prefetch.append(not any(touched.meets(r) for r in after.recvs))
        segments = [r.hi - r.lo for rnd in self.rounds for r in rnd.recvs if r.reduce]
        object.__setattr__(self, "reduce_after_send", guard)
        object.__setattr__(self, "prefetch", tuple(prefetch[: len(self.rounds)]))
        object.__setattr__(self, "max_segment", max(segments, default=0))

    def steps(self) -> Iterator[tuple[int, Send | Recv]]:
        """Every (round index, step) in issue order: a round's sends, then its receives."""
        for k, rnd in enumerate(self.rounds):
            for step in rnd.sends + rnd.recvs:
                yield k, step


def chunk_bounds(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """Split `[lo, hi)` into `parts` contiguous chunks whose lengths differ by at most one."""
    n = hi - lo
    return [(lo + i * n // parts, lo + (i + 1) * n // parts) for i in range(parts)]


def segments(lo: int, hi: int, max_len: int) -> Sequence[tuple[int, int]]:
    """Split `[lo, hi)` into pieces of at most `max_len` elements (none if empty)."""
    return [(a, min(a + max_len, hi)) for a in range(lo, hi, max_len)]
