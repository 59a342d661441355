"""Plans: one rank's schedule of a collective as plain data.

A plan is a sequence of rounds. A round holds sends and receives over element ranges
`[lo, hi)` of the flat work buffer; the steps of a round may run concurrently. A send of
round k reads data that is final at the end of round k-1. Between two ranks, sends and
receives are issued in plan order, so messages match without per-step tags.

Builders work with regions (several ranges: a rank's share of a collective need not be
contiguous), turn them into steps cut in segments (send_steps, recv_steps), and compose
schedules: side by side (merge_rounds) or backwards in time (reverse).
"""
from __future__ import annotations

import bisect
from dataclasses import KW_ONLY, dataclass, field
from typing import Callable, Hashable, Iterable, Iterator, Sequence, TypeVar

__all__ = ["Send", "Recv", "Round", "Plan", "Region", "make_plan", "chunk_bounds", "split_bounds",
           "segments", "send_steps", "recv_steps", "union", "merge_rounds", "reverse"]

Region = tuple[tuple[int, int], ...]  # element ranges [lo, hi), ascending and disjoint
T = TypeVar("T")
_MISSING = object()


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
    """One rank's schedule of `collective` (rooted at `root`, None where unrooted).

    `sends_input`: every send reads the caller's input (the executor's `src`), never the
    work buffer, and receives write the work buffer (alltoall); a round may then receive
    into a region it also sends. Otherwise sends read work as it stands after the round
    before.
    `prefetch[k]` is True when round k's receives may be posted while round k-1 runs: none
    of them touches a region that round k-1 reads from work (sends) or receives.
    `reduce_after_send[k]` is True when a reduce-receive of round k overlaps one of its sends
    (recursive doubling): the executor then waits for the sends before reducing.
    `max_segment` is the longest reduce-receive, which sizes the executor's scratch slots.
    `result_received`: the collective's result is what the plan receives (reduce_scatter's
    block, reduce's whole buffer on root, nothing elsewhere), so the executor need not copy
    the input's other regions into place.
    Building one is O(steps log steps). What executors and statistics derive from a plan
    is kept with it (`derived`), so a repeated call derives nothing again.
    """

    algorithm: str
    rank: int
    size: int
    count: int
    rounds: tuple[Round, ...]
    _: KW_ONLY
    collective: str = "allreduce"
    root: int | None = None
    sends_input: bool = False
    prefetch: tuple[bool, ...] = field(init=False)
    reduce_after_send: tuple[bool, ...] = field(init=False)
    max_segment: int = field(init=False)

    def __post_init__(self) -> None:
        if self.root is not None and not 0 <= self.root < self.size:
            raise ValueError(f"{self.collective} root {self.root} names no rank of {self.size}")
        # Sends that read the input leave work to the receives alone.
        sent = [_Cover(() if self.sends_input else rnd.sends) for rnd in self.rounds]
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
            touched = _Cover(before.recvs if self.sends_input else before.sends + before.recvs)
            prefetch.append(not any(touched.meets(r) for r in after.recvs))
        segments = [r.hi - r.lo for rnd in self.rounds for r in rnd.recvs if r.reduce]
        object.__setattr__(self, "reduce_after_send", guard)
        object.__setattr__(self, "prefetch", tuple(prefetch[: len(self.rounds)]))
        object.__setattr__(self, "max_segment", max(segments, default=0))

    @property
    def result_received(self) -> bool:
        """See the class doc: from 2 ranks on, every element of these results combines
        other ranks' data, so a receive writes it."""
        return self.size > 1 and self.collective in ("reduce_scatter", "reduce")

    def derived(self, key: Hashable, build: Callable[["Plan"], T]) -> T:
        """`build(self)`, computed once per plan and `key` (plans are cached: plan_for)."""
        memo = self.__dict__.setdefault("_derived", {})
        value = memo.get(key, _MISSING)
        if value is _MISSING:
            value = memo[key] = build(self)
        return value

    def steps(self) -> Iterator[tuple[int, Send | Recv]]:
        """Every (round index, step) in issue order: a round's sends, then its receives."""
        for k, rnd in enumerate(self.rounds):
            for step in rnd.sends + rnd.recvs:
                yield k, step


def make_plan(algorithm: str, rank: int, size: int, count: int, rounds: Iterable[Round],
              **labels) -> Plan:
    """The plan of `rounds` without the empty ones; `labels`: collective, root, sends_input."""
    return Plan(algorithm, rank, size, count, tuple(r for r in rounds if r.sends or r.recvs),
                **labels)


def chunk_bounds(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """Split `[lo, hi)` into `parts` contiguous chunks whose lengths differ by at most one."""
    n = hi - lo
    return [(lo + i * n // parts, lo + (i + 1) * n // parts) for i in range(parts)]


def split_bounds(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """Split `[lo, hi)` as np.array_split does: lengths differ by at most one, longer first.

    Rank r's block of a reduce-scatter, all-gather or alltoall is split_bounds(0, n, p)[r].
    """
    base, longer = divmod(hi - lo, parts)
    starts = [lo + i * base + min(i, longer) for i in range(parts + 1)]
    return list(zip(starts, starts[1:]))


def union(regions: Iterable[Region]) -> Region:
    """The ranges of `regions` (each ascending, all disjoint) sorted, touching ones merged."""
    merged: list[list[int]] = []
    for lo, hi in sorted(r for region in regions for r in region if r[1] > r[0]):
        if merged and merged[-1][1] == lo:
            merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


def segments(lo: int, hi: int, max_len: int) -> Sequence[tuple[int, int]]:
    """Split `[lo, hi)` into pieces of at most `max_len` elements (none if empty)."""
    return [(a, min(a + max_len, hi)) for a in range(lo, hi, max_len)]


def send_steps(peer: int, region: Region, seg: int) -> tuple[Send, ...]:
    """Sends of `region` to `peer`, in segments of at most `seg` elements."""
    return tuple(Send(peer, a, b) for lo, hi in region for a, b in segments(lo, hi, seg))


def recv_steps(peer: int, region: Region, seg: int, reduce: bool) -> tuple[Recv, ...]:
    """Receives of `region` from `peer` (reduced in, or copied), segments as send_steps."""
    return tuple(Recv(peer, a, b, reduce) for lo, hi in region for a, b in segments(lo, hi, seg))


def merge_rounds(schedules: Sequence[Sequence[Round]]) -> list[Round]:
    """Run several schedules side by side: round i holds every schedule's round i, in order.

    All ranks merge their schedules in the same order, so between any pair of ranks the
    messages keep one order on both sides.
    """
    depth = max((len(s) for s in schedules), default=0)
    return [
        Round(
            sends=tuple(step for s in schedules if i < len(s) for step in s[i].sends),
            recvs=tuple(step for s in schedules if i < len(s) for step in s[i].recvs),
        )
        for i in range(depth)
    ]


def reverse(rounds: Sequence[Round], reduce: bool) -> list[Round]:
    """The schedule run backwards: rounds and steps in reverse order, each send a receive
    from that peer (reduced in when `reduce`, else copied) and each receive a send.

    Data then flows the same paths the other way: a reduce-scatter reversed is an
    all-gather of the same blocks, a broadcast reversed is a reduce to its root. Between
    any pair of ranks the messages keep one order on both sides (reversed on both).
    """
    return [Round(sends=tuple(Send(r.peer, r.lo, r.hi) for r in reversed(rnd.recvs)),
                  recvs=tuple(Recv(s.peer, s.lo, s.hi, reduce) for s in reversed(rnd.sends)))
            for rnd in reversed(rounds)]
