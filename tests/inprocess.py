"""An in-process transport with MPI's matching rules, and plans run over it as threads.

The k-th send a -> b meets the k-th receive b <- a. Sends are eager (copied out at once),
so this checks values, not deadlock freedom under rendezvous (tests/symbolic_plans does).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

import numpy as np

from collectives.algorithms.plan import Plan
from collectives.errors import CollectiveTimeout
from collectives.execution import buffer_sizes, run_plan
from tests.threaded import run_ranks

__all__ = ["Eager", "run_plans"]


class _Done:
    def __init__(self, done: bool = True):
        self.done = done


class Eager:
    """One rank's end of an in-process transport: sends are copied out at once."""

    shared = None  # no zero-copy capability

    def abandon(self, sends, receives):
        """Nothing to withdraw: these in-process messages stop with the test."""

    def __init__(self, boxes, cond: threading.Condition, rank: int, size: int):
        self.boxes, self.cond, self.rank, self.size = boxes, cond, rank, size
        self.pending: list[tuple[_Done, np.ndarray, int]] = []

    def isend(self, buf, peer, tag):
        with self.cond:
            self.boxes[(self.rank, peer, tag)].append(buf.copy())
            self.cond.notify_all()
        return _Done()

    def irecv(self, buf, peer, tag):
        request = _Done(False)
        self.pending.append((request, buf, peer))
        return request

    def _match(self) -> None:
        still, blocked = [], set()
        for request, buf, peer in self.pending:
            box = self.boxes[(peer, self.rank, 1)]
            if peer in blocked or not box:  # a peer's messages land in posting order
                blocked.add(peer)
                still.append((request, buf, peer))
                continue
            message = box.popleft()
            assert message.size == buf.size, f"rank {self.rank}: {message.size} vs {buf.size} from {peer}"
            buf[...] = message
            request.done = True
        self.pending = still

    def _wait(self, test, deadline, what):
        with self.cond:
            while True:
                self._match()
                found = test()
                if found is not None:
                    return found
                if time.monotonic() > deadline:
                    raise CollectiveTimeout(f"rank {self.rank}: {what}")
                self.cond.wait(0.01)

    def wait_all(self, requests, deadline, what):
        self._wait(lambda: all(r.done for r in requests if r is not None) or None, deadline, what)

    def wait_any(self, requests, deadline, what):
        return self._wait(lambda: next((i for i, r in enumerate(requests) if r.done), None), deadline, what)


def run_plans(plans: list[Plan], works: list[np.ndarray], op: str, *, srcs=None, outs=None,
              shared: bool = False) -> list:
    """Every rank's `run_plan(plans[r], works[r], ...)` on a thread; each rank's result
    (its out, else its work) or the exception it raised."""
    boxes, cond = defaultdict(deque), threading.Condition()
    deadline = time.monotonic() + 20

    def rank_main(rank: int) -> np.ndarray:
        plan, work = plans[rank], works[rank]
        out = None if outs is None else outs[rank]
        scratch = np.empty(buffer_sizes(plan)[0], work.dtype)
        run_plan(plan, work, scratch, Eager(boxes, cond, rank, len(plans)), op, 1, deadline,
                 src=None if srcs is None else srcs[rank], out=out, shared=shared)
        return work if out is None else out

    return run_ranks(len(plans), rank_main, timeout=30)
