"""Plans: one rank's schedule of an all-reduce as plain data.

A plan is a sequence of rounds. A round holds sends and receives over element ranges
`[lo, hi)` of the flat work buffer; the steps of a round may run concurrently. A send of
round k reads data that is final at the end of round k-1. Between two ranks, sends and
receives are issued in plan order, so messages match without per-step tags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

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


def _overlap(a: Send | Recv, b: Send | Recv) -> bool:
    return a.lo < b.hi and b.lo < a.hi


@dataclass(frozen=True)
class Plan:
    """One rank's all-reduce schedule.

    `prefetch[k]` is True when round k's receives may be posted while round k-1 runs: none
    of them touches a region that round k-1 sends or receives.
    `reduce_after_send[k]` is True when a reduce-receive of round k overlaps one of its sends
    (recursive doubling): the executor then waits for the sends before reducing.
    `max_segment` is the longest reduce-receive, which sizes the executor's scratch slots.
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
        for k, rnd in enumerate(self.rounds):
            for recv in rnd.recvs:
                assert recv.reduce or not any(_overlap(recv, s) for s in rnd.sends), (
                    f"{self.algorithm} round {k}: copy-receive into a region it also sends"
                )
        guard = tuple(
            any(_overlap(r, s) for r in rnd.recvs if r.reduce for s in rnd.sends) for rnd in self.rounds
        )
        object.__setattr__(self, "reduce_after_send", guard)
        prefetch = [False]
        for before, after in zip(self.rounds, self.rounds[1:]):
            touched = before.sends + before.recvs
            prefetch.append(not any(_overlap(r, t) for r in after.recvs for t in touched))
        segments = [r.hi - r.lo for rnd in self.rounds for r in rnd.recvs if r.reduce]
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
