"""Interrupts (a signal handler that raises) inside the issue of an async call and inside
close(), injected where a signal may land (the eightieth review found each with real
SIGALRMs): the call is not issued, so issuing it again pairs right; the engine's lock is
not left held; a progress thread whose start was interrupted is replaced; a close() called
again after an interrupted one finishes the queued calls first.

Usage: mpiexec -n 2 python -m tests.workers.interrupted_issue
"""
from __future__ import annotations

import signal
import threading
import time

import numpy as np

import collectives
from tests.workers.common import Tally

CALLS = 3


class _Condition(threading.Condition):
    """The engine's Condition, whose exit is interrupted once when armed: after the lock
    was given back, or before."""

    armed: str | None = None

    def __exit__(self, *exc):
        when, _Condition.armed = _Condition.armed, None
        if when == "before-release":
            raise KeyboardInterrupt(when)
        released = super().__exit__(*exc)
        if when == "after-release":
            raise KeyboardInterrupt(when)
        return released


def issue_interrupted(tally: Tally, where: str) -> None:
    """CALLS async all-reduces; rank 0's second is interrupted at `where` and issued again."""
    comm = collectives.init(timeout=10)
    engine = comm._progress
    real_start = threading.Thread.start
    if where == "thread-start" and comm.rank == 0:
        def start(thread):
            threading.Thread.start = real_start  # once
            raise KeyboardInterrupt(where)
        threading.Thread.start = start
    else:
        engine._cv = _Condition(threading.RLock())
    handles = []
    for i in range(CALLS):
        if i == 1 and comm.rank == 0 and where != "thread-start":
            _Condition.armed = where
        while True:
            try:
                handles.append(comm.allreduce_async(np.full(4, 10.0 * i + comm.rank)))
                break
            except KeyboardInterrupt:
                pass  # not issued: issue it again
    threading.Thread.start = real_start
    for i, handle in enumerate(handles):
        got = handle.wait(timeout=30)
        tally.check(bool((got == 20.0 * i + 1).all()), f"{where}: call {i} gave {got}")
    tally.check(bool((comm.allreduce(np.ones(2)) == 2).all()), f"{where}: a sync call after")
    comm.close()


def close_interrupted(tally: Tally) -> None:
    """close() interrupted while 20 queued calls wait for the late rank 1, then called again:
    the interrupted join had marked the running thread stopped, and the second close closed
    the transport under 17 of the calls (PeerError on the peer)."""
    comm = collectives.init(timeout=10)
    if comm.rank == 1:
        time.sleep(1.0)
    handles = [comm.allreduce_async(np.full(3, float(i + comm.rank))) for i in range(20)]
    if comm.rank == 0:
        previous = signal.signal(signal.SIGALRM, _raise_interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        try:
            comm.close()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGALRM, previous)
    comm.close()
    right = sum(bool((h.wait(timeout=30) == 2 * i + 1).all()) for i, h in enumerate(handles))
    tally.check(right == len(handles), f"close again: {right} of {len(handles)} calls right")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt("alarm")


def main() -> None:
    tally = Tally(collectives.init().rank)
    for where in ("after-release", "before-release", "thread-start"):
        issue_interrupted(tally, where)
    close_interrupted(tally)
    tally.finish()


if __name__ == "__main__":
    main()
