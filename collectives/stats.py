"""Traffic and time per algorithm: what `comm.stats()` returns.

Bytes are counted from the plans the executor ran: every Send and Recv step times the wire
element size (2 bytes under fp16/bf16 compression), so compression's effect on the wire is
visible exactly. For `native` (MPI's own all-reduce, whose internal traffic MPI does not
report) the count is the bandwidth-optimal model 2(p-1)/p * n each way, and the entry says
so (`modelled=True`); so is the one-float max all-reduce that agrees on a compression scale
(`scale-agreement`).

Example::

    comm.reset_stats()
    comm.allreduce(x, algorithm="ring", compression="fp16")
    print(comm.stats())                 # a table; comm.stats()["ring+fp16"].bytes_sent
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Mapping

from .algorithms.plan import Plan

__all__ = ["AlgorithmStats", "Stats", "StatsRecorder", "plan_traffic", "native_traffic"]


@dataclass(frozen=True)
class AlgorithmStats:
    """Totals of one algorithm (or algorithm+compression) on this rank."""

    calls: int = 0
    seconds: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    modelled: bool = False  # bytes from the cost model, not counted from a plan


@dataclass(frozen=True)
class Stats(Mapping[str, AlgorithmStats]):
    """A snapshot: per label ("ring", "ring+fp16", "native", ...) the totals since reset."""

    by_algorithm: Mapping[str, AlgorithmStats]

    def __getitem__(self, label: str) -> AlgorithmStats:
        try:
            return self.by_algorithm[label]
        except KeyError:
            raise KeyError(f"no all-reduce ran as {label!r}; ran: {sorted(self.by_algorithm)}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_algorithm)

    def __len__(self) -> int:
        return len(self.by_algorithm)

    @property
    def bytes_sent(self) -> int:
        return sum(s.bytes_sent for s in self.by_algorithm.values())

    @property
    def bytes_received(self) -> int:
        return sum(s.bytes_received for s in self.by_algorithm.values())

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.by_algorithm.values())

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.by_algorithm.values())

    def __str__(self) -> str:
        lines = [f"{'algorithm':<22}{'calls':>8}{'time (s)':>12}{'sent (B)':>16}{'received (B)':>16}"]
        for label, s in sorted(self.by_algorithm.items()):
            mark = " (model)" if s.modelled else ""
            lines.append(f"{label + mark:<22}{s.calls:>8}{s.seconds:>12.6f}"
                         f"{s.bytes_sent:>16}{s.bytes_received:>16}")
        lines.append(f"{'total':<22}{self.calls:>8}{self.seconds:>12.6f}"
                     f"{self.bytes_sent:>16}{self.bytes_received:>16}")
        return "\n".join(lines)


class StatsRecorder:
    """A communicator's running totals; thread-safe (the progress thread records too).

    Recording is on every call's path, so it only adds to a list of four numbers per label.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, list] = {}  # label -> [calls, seconds, sent, received, modelled]

    def record(self, label: str, seconds: float, sent: int, received: int, *,
               modelled: bool = False) -> None:
        self.add(self.totals(label, modelled=modelled), seconds, sent, received)

    def totals(self, label: str, *, modelled: bool = False) -> list:
        """The running [calls, seconds, sent, received, modelled] of `label`, to `add` to
        (a caller that records one label often keeps it: the small-call lane)."""
        with self._lock:
            totals = self._totals.get(label)
            if totals is None:
                totals = self._totals[label] = [0, 0.0, 0, 0, modelled]
            return totals

    def add(self, totals: list, seconds: float, sent: int, received: int) -> None:
        """One more call in `totals` (from `totals()`)."""
        with self._lock:
            totals[0] += 1
            totals[1] += seconds
            totals[2] += sent
            totals[3] += received

    def snapshot(self) -> Stats:
        with self._lock:
            return Stats({label: AlgorithmStats(*totals)
                          for label, totals in self._totals.items() if totals[0]})

    def reset(self) -> None:
        with self._lock:
            for totals in self._totals.values():  # in place: the lane holds some of them
                totals[:4] = [0, 0.0, 0, 0]


def plan_traffic(plan: Plan) -> tuple[int, int]:
    """(elements sent, elements received) by one rank running `plan`; kept with the plan."""
    return plan.derived("traffic", _traffic)


def _traffic(plan: Plan) -> tuple[int, int]:
    return (sum(s.hi - s.lo for rnd in plan.rounds for s in rnd.sends),
            sum(r.hi - r.lo for rnd in plan.rounds for r in rnd.recvs))


def native_traffic(nbytes: int, size: int) -> int:
    """Bytes each way of a bandwidth-optimal all-reduce of `nbytes` on `size` ranks."""
    return 2 * (size - 1) * nbytes // size if size > 1 else 0
