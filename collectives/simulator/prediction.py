"""What a simulation returns: the predicted time, bytes per rank and link class, and the
critical path that explains it."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Hop", "CriticalPath", "Prediction", "BUS_FACTORS"]


@dataclass(frozen=True)
class Hop:
    """One piece of the critical path: `kind` ("message", "queued", "reduce", "copy",
    "latency") on `rank` (a class representative) in `round`, taking `seconds`."""

    rank: int
    round: int
    kind: str
    link: str
    nbytes: int
    seconds: float


@dataclass(frozen=True)
class CriticalPath:
    """The chain of steps that set the finish time, and its time by kind of step."""

    hops: tuple[Hop, ...]

    @property
    def seconds_by_kind(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for hop in self.hops:
            total[hop.kind] = total.get(hop.kind, 0.0) + hop.seconds
        return total

    @property
    def messages(self) -> int:
        return sum(hop.kind in ("message", "latency") for hop in self.hops)

    def summary(self) -> str:
        """E.g. ``14 messages (intra 12, inter 2); message 80%, reduce 20%``."""
        links: dict[str, int] = {}
        for hop in self.hops:
            if hop.kind in ("message", "latency"):
                links[hop.link] = links.get(hop.link, 0) + 1
        by_kind = self.seconds_by_kind
        total = sum(by_kind.values()) or 1.0
        shares = ", ".join(f"{kind} {100 * t / total:.0f}%" for kind, t in
                           sorted(by_kind.items(), key=lambda kv: -kv[1]) if t > 0)
        link_text = ", ".join(f"{name} {n}" for name, n in sorted(links.items()))
        return f"{self.messages} messages ({link_text}); {shares}"


# nccl-tests' bus bandwidth factor per collective (doc/PERFORMANCE.md), for p ranks
BUS_FACTORS = {
    "allreduce": lambda p: 2 * (p - 1) / p,
    "reduce_scatter": lambda p: (p - 1) / p,
    "allgather": lambda p: (p - 1) / p,
    "alltoall": lambda p: (p - 1) / p,
    "broadcast": lambda p: 1.0,
    "reduce": lambda p: 1.0,
}


@dataclass(frozen=True)
class Prediction:
    """What a simulated collective costs: `time` in seconds (the plan, slowest rank).
    Simulated by class, `bytes_sent` and `class_bytes` count each rank as its class's
    representative: within one element per message where the count does not divide."""

    algorithm: str
    collective: str
    size: int
    count: int
    itemsize: int
    time: float
    bytes_sent: tuple[int, ...]
    class_bytes: dict[str, int]
    busiest_link: tuple[int, int, int]  # (src, dst, bytes)
    critical_path: CriticalPath
    simulated_ranks: int
    symmetry: str

    @property
    def nbytes(self) -> int:
        return self.count * self.itemsize

    def busbw(self, seconds: float | None = None) -> float:
        """nccl-tests' bus bandwidth in GB/s for `seconds` (default: the plan's time)."""
        seconds = self.time if seconds is None else seconds
        if seconds <= 0 or self.size < 2:
            return 0.0
        return self.nbytes / seconds / 1e9 * BUS_FACTORS[self.collective](self.size)
