"""Sends nobody waits for (fire and forget), kept alive with their buffers until done.

A dropped send's request keeps its buffer, which MPI or gloo may still read; once the
transport says the send is done the request can go. Kept for the transport's life, 1500
dropped sends of 1 MiB held 1.5 GB (the eighty-sixth review). Here `tidy` lets go of
those done, when their count has doubled since it last looked or PRUNE_INTERVAL_S have
passed; the transport calls it on every send, message test and collective, so a burst
that was delivered is let go at the next of those (looking only at sends made a burst
to a slow receiver keep its buffers until close; the ninetieth review).

`add` runs in any thread and also from a message's `__del__`, which a garbage collection
may run inside a prune. One thread prunes at a time (`with` a reentrant lock, which an
interrupt cannot leave held: a plain acquire could, and close then waited for ever; the
ninetieth review); a prune takes only a request found done that is still first, and
moves the others to the back, each step one deque operation: neither an interrupt nor a
prune inside a prune loses a request in flight.

Example::

    dropped = DroppedSends(lambda request: request.Test())
    dropped.add(request)          # from Message.__del__
    dropped.tidy()                # on every send, message test and collective
    pending = dropped.take()      # at close: what may still be in flight
"""
from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any, Callable

__all__ = ["DroppedSends"]

PRUNE_FROM = 64  # requests kept before a prune is due by count
PRUNE_INTERVAL_S = 0.1  # after which a prune is due whatever the count


class DroppedSends:
    """The requests of dropped sends that may still be in flight (see the module doc)."""

    def __init__(self, finished: Callable[[Any], bool]):
        self._finished = finished  # whether the transport is done with a request
        self._requests: collections.deque = collections.deque()
        self._pruning = threading.RLock()
        self._prune_at = PRUNE_FROM
        self._prune_after = 0.0  # (monotonic)

    def add(self, request) -> None:
        """Keep `request` until it is done."""
        self._requests.append(request)
        self.tidy()

    def tidy(self) -> None:
        """Let go of the requests done, where a prune is due (cheap where none is)."""
        requests = self._requests
        if not requests or (len(requests) < self._prune_at
                            and time.monotonic() < self._prune_after):
            return
        with self._pruning:
            for _ in range(len(requests)):
                if not requests:
                    break
                first = requests[0]
                if self._finished(first) and requests and requests[0] is first:
                    requests.popleft()  # (a prune inside _finished may have moved it)
                else:
                    requests.rotate(-1)
            self._prune_at = max(PRUNE_FROM, 2 * len(requests))
            self._prune_after = time.monotonic() + PRUNE_INTERVAL_S

    def take(self) -> list:
        """At close: the requests kept now, for the caller to settle; no prune runs after
        (two threads must not complete one request), so they and any added later stay."""
        with self._pruning:  # (waits for a prune under way)
            self._prune_at = self._prune_after = math.inf
            return list(self._requests)
