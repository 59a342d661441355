"""Which buffered point-to-point operations a group-launching transport (NCCL) starts together.

NCCL runs a group of sends and receives as one kernel on one stream: the kernel ends only
when every operation in it has met its peer, and a later group on the stream cannot start
before it. A receive whose matching send sits in a later group of the peer therefore
deadlocks as soon as the ring closes. The executor posts a round's sends at once but its
reduce-receives a few at a time (as scratch slots free up), so "everything pending in one
group" is not safe.

The policy here pairs the j-th pending receive with the j-th pending send, one pair per
group. In a plan where, on every rank, each round sends as many segments as it receives
(ring phases, pairwise exchanges), pair j of a rank meets pair j of its neighbours, and
pair j is launched once pairs before it completed: no cycle, by induction on j. Operations
that find no partner wait; when a wait would otherwise never end (nothing it waits on is
launched), every pending operation is launched as one group.

Example::

    >>> q = PairQueue()
    >>> for op in ("r0", "r1", "s0"):
    ...     q.add(op, is_send=op.startswith("s"))
    >>> q.pairs()
    [['r0', 's0']]
    >>> q.drain()
    [['r1']]
"""
from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["PairQueue"]

T = TypeVar("T")


class PairQueue(Generic[T]):
    """Pending operations, handed out as groups to launch (in posting order per direction)."""

    def __init__(self) -> None:
        self._recvs: deque[T] = deque()
        self._sends: deque[T] = deque()

    def add(self, op: T, *, is_send: bool) -> None:
        (self._sends if is_send else self._recvs).append(op)

    def pairs(self) -> list[list[T]]:
        """One group [receive, send] per pair that can be formed now."""
        groups = []
        while self._recvs and self._sends:
            groups.append([self._recvs.popleft(), self._sends.popleft()])
        return groups

    def drain(self) -> list[list[T]]:
        """Everything left, as one group (none if nothing is pending)."""
        rest = [*self._recvs, *self._sends]
        self._recvs.clear()
        self._sends.clear()
        return [rest] if rest else []

    def __len__(self) -> int:
        return len(self._recvs) + len(self._sends)
