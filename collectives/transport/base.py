"""The transport interfaces: nonblocking point-to-point, bounded waits, records, capabilities.

A transport moves bytes between ranks and knows nothing about algorithms. Buffers are 1-D
contiguous arrays; deadlines are `time.monotonic()` values after which a wait raises
`CollectiveTimeout`.

- `DataTransport` moves a plan's messages and runs the transport's own all-reduce; every
  transport is one (MPI, shared memory, NCCL, staged CuPy over MPI, gloo).
- `HostTransport` is a DataTransport that also carries the control traffic of a job: the
  agreement records, notices between ranks, small object gathers, node membership, abort.
  Device transports (NCCL, staged) leave that to the host transport they were built over.

Capabilities are explicit attributes, never probed: `shared` is the zero-copy interface
(`SharedWork`) of a transport whose on-node peers read each other's buffers in place
(the shm transport), else None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, TypeVar

__all__ = ["Request", "DataTransport", "HostTransport", "SharedWork", "Notice",
           "RECORD_CAPACITY"]

Request = Any
T = TypeVar("T")

# Bytes of one agreement record: a header and up to 4 KiB of data riding with it.
RECORD_CAPACITY = 4096 + 64


@dataclass(frozen=True)
class Notice:
    """What a rank tells every other rank when it stops taking part.

    `kind` "gave up": it timed out in collective `seq` (so it will not finish it);
    "left": it closed its communicator or its program ended after collective `seq`.
    """

    rank: int
    kind: str
    seq: int

    def stops(self, seq: int) -> bool:
        """Whether a rank in collective `seq` can no longer complete it with this rank: it
        gave up on `seq` or an earlier one, or left before `seq`. A rank that gave up on a
        later collective finished this one (a slow rank's collective still succeeds)."""
        return seq >= self.seq if self.kind == "gave up" else seq > self.seq

    def __str__(self) -> str:
        if self.kind == "gave up":
            return (f"rank {self.rank} gave up on collective #{self.seq} (it timed out, "
                    "failed or was interrupted)")
        return (f"rank {self.rank} left after collective #{self.seq} (its communicator was "
                "closed or its program ended)")


class SharedWork(Protocol):
    """Zero-copy exchange among a node's ranks: buffers peers read where they lie."""

    def work_buffer(self, count: int, dtype, *, deadline: float):
        """`count` elements of `dtype` that on-node peers read in place, or None."""

    def irecv_view(self, buf, peer: int, tag: int) -> Request:
        """Like irecv; once complete `view(req)` may be the peer's bytes where they lie."""

    def view(self, request):
        """The received elements of a completed irecv_view request."""

    def release(self, request) -> None:
        """Done reading a view: the peer's send may complete."""


class DataTransport(Protocol):
    name: str
    rank: int
    size: int
    shared: SharedWork | None

    def isend(self, buf, peer: int, tag: int) -> Request: ...

    def irecv(self, buf, peer: int, tag: int) -> Request: ...

    def wait_all(self, requests: Sequence[Request], deadline: float, what: str) -> None:
        """Wait for every request; `what` names the step in a timeout message."""

    def wait_any(self, requests: list[Request], deadline: float, what: str) -> int:
        """Wait until one of `requests` completes and return its index (the caller drops it)."""

    def poll(self, test: Callable[[], T | None], deadline: float, what: str) -> T:
        """`test()`'s first result other than None, driving progress; bounded by `deadline`."""

    def abandon(self, sends: Sequence[Request], receives: Sequence[Request]) -> None:
        """Give up on requests after a timeout: receives are cancelled where they can be,
        and every request keeps its buffer alive for good, so a late peer's bytes never
        land in memory that was freed or handed back to the caller."""

    def native_allreduce(self, src, dst, op: str, deadline: float) -> None:
        """The transport's own all-reduce of `src` into `dst` (`op` sum, max or min).

        `dst` must be memory the caller never hands back on failure: the operation cannot
        be cancelled, so after a timeout it may still write there.
        """


class HostTransport(DataTransport, Protocol):
    def exchange_records(self, record, deadline: float, what: str):
        """Every rank's record (1-D uint8, at most RECORD_CAPACITY bytes, lengths may
        differ) as rows of a (size, RECORD_CAPACITY) uint8 array, row r from rank r; valid
        until the next exchange. A timeout names the ranks not heard from."""

    def begin(self, seq: int) -> None:
        """Collective `seq` starts: waits from now on raise PeerError on a notice that
        stops it (Notice.stops)."""

    def check_peers(self) -> None:
        """PeerError if a notice heard says a peer will not take part in the current
        collective."""

    def tell_peers(self, kind: str, seq: int) -> None:
        """Send a Notice to every other rank (nonblocking, best effort)."""

    def native_reduce_scatter(self, src, dst, counts: Sequence[int], op: str,
                              deadline: float) -> None:
        """dst (counts[rank] elements) = this rank's block of the reduction of src."""

    def native_allgather(self, src, dst, deadline: float) -> None:
        """dst (size * src.size elements) = every rank's src, in rank order."""

    def native_broadcast(self, buf, root: int, deadline: float) -> None:
        """root's `buf` into every rank's `buf`."""

    def native_reduce(self, src, dst, op: str, root: int, deadline: float) -> None:
        """The reduction of src onto root's `dst` (None on the other ranks)."""

    def native_alltoall(self, src, dst, deadline: float) -> None:
        """Block r of src goes to rank r; block q of dst comes from rank q."""

    def p2p_send(self, buf, peer: int, tag: int):
        """Point to point, on a channel apart from the collectives': a send request."""

    def p2p_recv(self, buf, peer: int, tag: int):
        """A receive request that takes a message of buf's size only."""

    def p2p_drop(self, request, send: bool) -> None:
        """A point-to-point request nobody will wait for: abandoned."""

    def p2p_test(self, request, what: str) -> bool:
        """Whether a point-to-point request completed; CollectiveError if it failed."""

    def p2p_peer_left(self, peer: int) -> Notice | None:
        """`peer`'s notice that it left, if heard: a message with it that has not completed
        never will."""

    def allgather_object(self, obj: object) -> list: ...

    def node_keys(self) -> list:
        """Per rank, a key equal for ranks that share a node."""

    def barrier(self, deadline: float) -> None: ...

    def abort(self, errorcode: int) -> None:
        """End every rank of the job now."""

    def close(self) -> None:
        """Free what the transport holds; collective over its ranks, bounded."""
