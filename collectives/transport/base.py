"""The transport interface: nonblocking point-to-point, bounded waits, a native baseline.

A transport moves bytes between ranks and knows nothing about algorithms. Buffers are 1-D
contiguous arrays; deadlines are `time.monotonic()` values after which a wait raises
`CollectiveTimeout`.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

__all__ = ["Request", "Transport"]

Request = Any


class Transport(Protocol):
    rank: int
    size: int
    name: str

    def isend(self, buf, peer: int, tag: int) -> Request: ...

    def irecv(self, buf, peer: int, tag: int) -> Request: ...

    def wait_all(self, requests: Sequence[Request], deadline: float, what: str) -> None:
        """Wait for every request; `what` names the step in a timeout message."""

    def wait_any(self, requests: list[Request], deadline: float, what: str) -> int:
        """Wait until one of `requests` completes and return its index (the caller drops it)."""

    def native_allreduce(self, src, dst, op: str, deadline: float) -> None:
        """The transport's own all-reduce of `src` into `dst` (`op` sum, max or min)."""

    def allgather_object(self, obj: object) -> list: ...

    def allgather_record(self, record, deadline: float, what: str):
        """Every rank's fixed-size uint8 record (the agreement check), bounded by `deadline`."""

    def abort(self, errorcode: int) -> None:
        """End every rank of the job now."""

    def barrier(self) -> None: ...
