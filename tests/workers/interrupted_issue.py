"""Interrupts (a signal handler that raises) inside the issue of an async call and inside
close(), injected where a signal may land (the eightieth review found each with real
SIGALRMs): the call is not issued, so issuing it again pairs right; the engine's lock is
not left held; a progress thread whose start was interrupted is replaced; a close() called
again after an interrupted one finishes the queued calls first. And what the fix's review
(the eighty-first) found: threads issuing their first async call at once started a
progress thread each, a forked child's close() waited out the timeout.

Usage: mpiexec -n 2 python -m tests.workers.interrupted_issue
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np

import collectives
from collectives.progress import THREAD_NAME
from tests.workers.common import Tally, interrupted_after

CALLS = 3
THREADS = 4


class _Condition(threading.Condition):
    """The engine's Condition, whose exit on the main thread is interrupted once when armed
    (signal handlers run there): after the lock was given back, or before."""

    armed: str | None = None

    def __exit__(self, *exc):
        if threading.current_thread() is not threading.main_thread():
            return super().__exit__(*exc)
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
        interrupted_after(0.05, comm.close)
    comm.close()
    right = sum(bool((h.wait(timeout=30) == 2 * i + 1).all()) for i, h in enumerate(handles))
    tally.check(right == len(handles), f"close again: {right} of {len(handles)} calls right")


def first_calls_at_once(tally: Tally) -> None:
    """THREADS threads (one name: the ranks pair their calls in any order) issue their first
    async call at once, on fresh communicators: one progress thread each, right sums."""
    for trial in range(10):
        comm = collectives.init(timeout=10)
        start = threading.Barrier(THREADS)
        sums = []

        def issue():
            start.wait()
            sums.append(comm.allreduce_async(np.ones(4)).wait(timeout=30))

        before = _progress_threads()  # (a closed engine's may still be ending)
        threads = [threading.Thread(target=issue, name="issuer") for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        started = len(_progress_threads() - before)
        tally.check(started == 1, f"trial {trial}: {started} progress threads")
        tally.check(all((y == comm.size).all() for y in sums), f"trial {trial}: {sums}")
        comm.close()


def _progress_threads() -> set:
    return {t for t in threading.enumerate() if t.name == THREAD_NAME}


def close_with_its_lock_interrupted(tally: Tally) -> None:
    """An interrupt as close() gives back the engine's lock left it held: a second close()
    and every call were refused as "inside a collective" (the eighty-first review)."""
    comm = collectives.init(timeout=10)
    comm._progress._cv = _Condition(threading.RLock())  # (before its thread waits on it)
    comm.allreduce_async(np.ones(4)).wait()
    _Condition.armed = "before-release"
    try:
        comm.close()
        tally.check(False, "close() went through its interrupt")
    except KeyboardInterrupt:
        pass
    comm.close()
    try:
        comm.allreduce(np.ones(2))
        tally.check(False, "a call after close() ran")
    except collectives.CollectiveError as error:
        tally.check("this communicator is closed" in str(error), f"after close: {error}")


def close_in_a_forked_child(tally: Tally) -> None:
    """A forked child's close() waited for the parent's progress thread, which it lacks,
    until the timeout, then raised that calls "still ran"."""
    comm = collectives.init(timeout=5)
    comm.allreduce_async(np.ones(4)).wait()
    child = os.fork()
    if child == 0:
        start = time.monotonic()
        comm.close()
        os._exit(0 if time.monotonic() - start < 2 else 3)
    _, status = os.waitpid(child, 0)
    tally.check(os.waitstatus_to_exitcode(status) == 0, f"the child's close(): {status}")
    comm.close()


def main() -> None:
    tally = Tally(collectives.init().rank)
    for where in ("after-release", "before-release", "thread-start"):
        issue_interrupted(tally, where)
    close_interrupted(tally)
    first_calls_at_once(tally)
    close_with_its_lock_interrupted(tally)
    close_in_a_forked_child(tally)
    tally.finish()


if __name__ == "__main__":
    main()
