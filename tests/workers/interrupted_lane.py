"""An interrupt that lands just as a repeated small call takes the progress engine's lock
(a signal handler that raises, KeyboardInterrupt), before the collective began: the call
raises it, and the rank is still in step, so its next calls work, sync and async (the
eleventh review: the lock stayed held and the next collective blocked for ever).

Usage: mpiexec -n P python -m tests.workers.interrupted_lane
Rank 0's lock raises once, right after it was taken (a fault injected where a signal may
land), in a repeated allreduce (the all-reduce lane) and in a repeated allgather (the lane
of the other collectives).
"""
from __future__ import annotations

import numpy as np

import collectives
from tests.workers.common import Tally


class Interrupted(Exception):
    """What the interrupt raises."""


class InterruptedAfterTaking:
    """The engine's lock, raising once right after a non-blocking acquire took it."""

    def __init__(self, lock):
        self.lock, self.armed = lock, False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self.lock.acquire(blocking, timeout)
        if taken and self.armed and not blocking:
            self.armed = False
            raise Interrupted("the user's alarm")
        return taken

    def release(self) -> None:
        self.lock.release()

    def _is_owned(self) -> bool:
        return self.lock._is_owned()

    def __enter__(self):
        return self.lock.__enter__()

    def __exit__(self, *exc_info):
        return self.lock.__exit__(*exc_info)


def main() -> None:
    comm = collectives.init(timeout=20)
    rank, size = comm.rank, comm.size
    tally = Tally(rank)
    engine = comm._progress
    lock = engine._running = InterruptedAfterTaking(engine._running)
    x = np.full(4, rank + 1.0)
    want = np.full(4, size * (size + 1) / 2)
    calls = {
        "allreduce": (lambda: comm.allreduce(x), want),
        "allgather": (lambda: comm.allgather(x)[:, 0],
                      np.arange(1.0, size + 1)),
    }
    for name, (call, expected) in calls.items():
        call()  # the route is made; the next call takes the lane
        lock.armed = rank == 0
        if rank == 0:
            try:
                call()
                tally.check(False, f"{name}: the interrupt was not raised")
            except Interrupted:
                pass
        for _ in range(2):
            tally.check(np.array_equal(call(), expected), f"{name}: a later call is wrong")
        handle = comm.allreduce_async(x)
        tally.check(np.array_equal(handle.wait(timeout=20), want), f"{name}: async after")
    tally.finish()


if __name__ == "__main__":
    main()
