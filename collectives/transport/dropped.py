"""Sends nobody waits for (fire and forget), kept alive with their buffers until done.

A dropped send's request keeps its buffer, which MPI or gloo may still read; once the
transport says the send is done the request can go. Kept for the transport's life, 1500
dropped sends of 1 MiB held 1.5 GB (the eighty-sixth review); here they are pruned once
their count doubles since the last prune, so a loop of dropped sends keeps about as many
as are in flight.

`add` runs in any thread and also from a message's `__del__`, which a garbage collection
may run inside the prune itself: it never blocks (one thread prunes, the others only
append). A prune removes only requests found done, from the front, and moves the others
to the back, each step one atomic deque operation: an interrupt between two steps loses
nothing that is still in flight.

Example::

    dropped = DroppedSends(lambda request: request.Test())
    dropped.add(request)          # from Message.__del__
    pending = dropped.take()      # at close: what may still be in flight
"""
from __future__ import annotations

import collections
import math
import threading
from typing import Any, Callable

__all__ = ["DroppedSends"]

PRUNE_FROM = 64  # requests kept before the first prune


class DroppedSends:
    """The requests of dropped sends that may still be in flight (see the module doc)."""

    def __init__(self, finished: Callable[[Any], bool]):
        self._finished = finished  # whether the transport is done with a request
        self._requests: collections.deque = collections.deque()
        self._pruning = threading.Lock()
        self._prune_at = PRUNE_FROM

    def add(self, request) -> None:
        """Keep `request` until it is done."""
        requests = self._requests
        requests.append(request)
        if len(requests) >= self._prune_at and self._pruning.acquire(blocking=False):
            try:
                self._prune()
            finally:
                self._pruning.release()

    def _prune(self) -> None:
        requests = self._requests
        for _ in range(len(requests)):
            if self._finished(requests[0]):  # (only this thread takes from the front)
                requests.popleft()
            else:
                requests.rotate(-1)
        self._prune_at = max(PRUNE_FROM, 2 * len(requests))

    def take(self) -> list:
        """At close: the requests kept now, for the caller to settle; no prune runs after
        (two threads must not complete one request), so they and any added later stay."""
        with self._pruning:
            self._prune_at = math.inf
            return list(self._requests)
