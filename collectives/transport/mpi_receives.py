"""Point-to-point receives over MPI that learn a message's size before taking its bytes.

A plain `MPI_Irecv` writes the buffer before anyone can see that the message has another
size: a shorter message leaves part of the buffer changed, a longer one fills it and then
fails as truncated. A `ProbedReceive` matches its message first (`MPI_Improbe`, which
removes it from matching, so no other receive can take it), then receives it with
`MPI_Imrecv`: into the caller's buffer when the sizes agree, into scratch when they do not
(then `test` raises, the buffer untouched, and the next receive gets the next message).

Receives of one (peer, tag) take messages in the order they were posted, as MPI's own
receives do: a receive matches only after the one posted before it, and testing a
receive first matches those before it. Matching runs under one lock, since threads may
post and test receives of one channel.

Example::

    receives = ProbedReceives(p2p_comm)
    request = receives.post(buf, peer=1, tag=7)
    while not receives.test(request, "receive from rank 1"):
        ...
"""
from __future__ import annotations

import collections
import threading

import numpy as np
from mpi4py import MPI

from ..errors import CollectiveError

__all__ = ["ProbedReceive", "ProbedReceives"]


class ProbedReceive:
    """One posted receive: unmatched until its message is probed, then an Imrecv."""

    __slots__ = ("buffer", "peer", "tag", "before", "request", "problem", "dropped")

    def __init__(self, buffer: np.ndarray, peer: int, tag: int, before: ProbedReceive | None):
        self.buffer = buffer  # what the Imrecv writes: the caller's, or scratch; kept alive
        self.peer, self.tag, self.before = peer, tag, before
        self.request: MPI.Request | None = None  # the Imrecv, once the message is matched
        self.problem: str | None = None  # why the message did not fit the buffer
        self.dropped = False

    # MPI.Request's names: the transport cancels what it abandons and tests it at close.
    def Cancel(self) -> None:  # noqa: N802
        """Given up on: an unmatched receive never takes a message (the receives after it
        skip it); a matched one cannot be cancelled and completes into its buffer."""
        self.dropped = True

    def Test(self) -> bool:  # noqa: N802
        """Whether nothing of it is pending: given up on before its message came, or
        received."""
        return self.dropped if self.request is None else self.request.Test()


class ProbedReceives:
    """The receives posted on one communicator (see the module doc)."""

    def __init__(self, comm: MPI.Comm):
        self._comm = comm
        self._lock = threading.Lock()
        self._last: dict[tuple[int, int], ProbedReceive] = {}  # unmatched, per (peer, tag)
        self.taken: collections.Counter = collections.Counter()  # messages matched, per peer

    def post(self, buffer: np.ndarray, peer: int, tag: int) -> ProbedReceive:
        """A receive of `buffer.nbytes` bytes from `peer` with `tag` (buffer: 1-D uint8)."""
        with self._lock:
            receive = ProbedReceive(buffer, peer, tag, self._last.get((peer, tag)))
            self._last[(peer, tag)] = receive
            self._match(receive)
        return receive

    def test(self, receive: ProbedReceive, what: str) -> bool:
        """Whether `receive` completed; CollectiveError if its message had another size or
        MPI failed it."""
        if receive.request is None:
            with self._lock:
                if not self._match(receive) or receive.request is None:  # (None: dropped)
                    return False
        try:
            done = receive.request.Test()
        except MPI.Exception as error:
            reason = error.Get_error_string().splitlines()[-1].strip()
            raise CollectiveError(f"{what} failed: {reason}") from None
        if done and receive.problem is not None:
            raise CollectiveError(f"{what}: {receive.problem}; the buffer was not written")
        return done

    def progress(self) -> None:
        """Match every posted receive whose message arrived. A rank that waits for its send
        before its receive (torch's batch_isend_irecv) must still take the peer's message:
        a large send completes only when its receiver takes it (the forty-first review)."""
        with self._lock:
            for receive in list(self._last.values()):
                self._match(receive)

    def _match(self, receive: ProbedReceive) -> bool:
        """Match `receive`'s message, and first those of the receives posted before it that
        have none yet; whether `receive` is matched (lock held)."""
        waiting = []  # receive and the unmatched ones before it, newest first
        while receive is not None and receive.request is None:
            if not receive.dropped:  # (a dropped one never takes a message: skipped)
                waiting.append(receive)
            receive = receive.before
        for receive in reversed(waiting):
            receive.before = None  # every receive before it is matched or dropped
            if not self._probe(receive):
                return False
        return True

    def _probe(self, receive: ProbedReceive) -> bool:
        """Take `receive`'s message if it arrived: into its buffer, or scratch when the
        sizes differ."""
        status = MPI.Status()
        message = self._comm.Improbe(receive.peer, receive.tag, status)
        if message is None:
            return False
        self.taken[receive.peer] += 1
        nbytes, room = status.Get_count(MPI.BYTE), receive.buffer.nbytes
        if nbytes != room:
            receive.buffer = np.empty(nbytes, np.uint8)
            receive.problem = (f"message truncated: it has {nbytes} bytes, the buffer {room}"
                               if nbytes > room else
                               f"the message has {nbytes} bytes, the buffer {room}")
        receive.request = message.Irecv([receive.buffer, MPI.BYTE])
        key = (receive.peer, receive.tag)
        if self._last.get(key) is receive:
            del self._last[key]
        return True
