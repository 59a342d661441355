"""The shared-memory transport on its own: zero-copy, ordering, slot reuse, timeouts, close.

Usage: mpiexec -n P python -m tests.workers.shm_transport   (P >= 2, one node)
Rank r exchanges with every other rank; each check is tallied.
"""
from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

from collectives.errors import CollectiveTimeout
from collectives.transport.mpi import MPITransport
from collectives.transport.shm import SLOTS, ShmTransport
from tests.workers.common import Tally

DEADLINE = 30.0


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def inside(view: np.ndarray, segment: np.ndarray) -> bool:
    start = address(view) - address(segment)
    return 0 <= start and start + view.nbytes <= segment.nbytes


def pattern(n: int, sender: int, receiver: int, k: int = 0) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) * 3 + sender * 1000 + receiver * 10 + k).astype(np.float32)


def main() -> None:
    t = ShmTransport(MPITransport(MPI.COMM_WORLD.Dup()), close_grace=10.0)  # (ranks reach close() apart)
    tally = Tally(t.rank)
    p, me = t.size, t.rank
    peers = [r for r in range(p) if r != me]
    deadline = time.monotonic() + DEADLINE
    n = 1000

    # 1. Sends from the work buffer are zero-copy: a view receive reads the sender's segment,
    #    and the send completes only once the receiver releases the view.
    work = t.work_buffer(n * p, np.float32, deadline=deadline)
    tally.check(work is not None and inside(work, t._data[t.me]), "work buffer not in my window")
    for q in range(p):
        work[q * n : (q + 1) * n] = pattern(n, me, q)
    scratch = {q: np.zeros(n, np.float32) for q in peers}
    recvs = {q: t.irecv_view(scratch[q], q, 7) for q in peers}
    sends = {q: t.isend(work[q * n : (q + 1) * n], q, 7) for q in peers}
    t.wait_all(list(recvs.values()), deadline, "view receives")
    for q in peers:
        view = t.view(recvs[q])
        tally.check(inside(view, t._data[t.local[q]]), f"view from {q} is not the peer's bytes")
        tally.check(np.array_equal(view, pattern(n, q, me)), f"view from {q} has wrong values")
        tally.check(not scratch[q].any(), f"view receive from {q} copied into scratch")
    MPI.COMM_WORLD.Barrier()  # every rank holds its views: no send may be complete
    held = [q for q in peers if t._done(sends[q])]
    tally.check(not held, f"sends to {held} completed before the views were released")
    MPI.COMM_WORLD.Barrier()
    for q in peers:
        t.release(recvs[q])
    t.wait_all(list(sends.values()), deadline, "sends after release")

    # 2. A send timing out names the rank that never received it.
    if me == 0:
        request = t.isend(work[:n], 1, 8)
        try:
            t.wait_all([request], time.monotonic() + 0.3, "an unreceived send")
            tally.check(False, "a send nobody receives completed")
        except CollectiveTimeout as error:
            tally.check("[1]" in str(error), f"timeout does not name rank 1: {error}")
    MPI.COMM_WORLD.Barrier()
    if me == 1:  # take it now, so the pair's stream stays in step
        t.wait_all([t.irecv(np.empty(n, np.float32), 0, 8)], deadline, "late receive")
    if me == 0:
        t.wait_all([request], deadline, "the late send")

    # 3. Many more messages in flight than descriptor slots, window and private buffers mixed:
    #    everything arrives in order, copies land where asked.
    count = 3 * SLOTS + 5
    m = 16
    private = np.stack([pattern(m, me, 0, k) for k in range(count)])
    shared = t.work_buffer(count * m, np.float32, deadline=deadline).reshape(count, m)
    shared[:] = private
    for q in peers:
        got = np.zeros((count, m), np.float32)
        recvs = [t.irecv(got[k], q, 9) for k in range(count)] if me > q else []
        sends = [t.isend(shared[k] if k % 3 else private[k], q, 9) for k in range(count)]
        recvs = recvs or [t.irecv(got[k], q, 9) for k in range(count)]
        t.wait_all(recvs + sends, deadline, f"stream with {q}")
        want = np.stack([pattern(m, q, 0, k) for k in range(count)])
        bad = np.flatnonzero((got != want).any(axis=1))
        tally.check(not bad.size, f"stream from {q}: messages {bad[:5]} out of order or wrong")

    # 4. A bigger work buffer grows the window (collectively); a smaller one does not shrink it.
    before = t._data[t.me].size
    t.work_buffer(before + 1, np.uint8, deadline=deadline)
    grown = t._data[t.me].size
    t.work_buffer(10, np.uint8, deadline=deadline)
    tally.check(grown > before and t._data[t.me].size == grown, f"window sizes {before} {grown}")
    tally.check(grown <= 2 * (before + 1) + (1 << 20), f"window over-grown to {grown}")

    # 5. close() frees the windows when all ranks close, is idempotent, and gives up on a
    #    rank that never comes instead of hanging.
    if me == p - 1:
        time.sleep(0.1)
    t.close()
    t.close()
    tally.check(t._data_win is None, "windows not freed after every rank closed")
    lonely = ShmTransport(MPITransport(MPI.COMM_WORLD.Dup()), close_grace=0.5)
    MPI.COMM_WORLD.Barrier()
    if me == 0:
        start = time.monotonic()
        lonely.close()
        tally.check(time.monotonic() - start < 5, "close waited past its grace period")
    MPI.COMM_WORLD.Barrier()
    if me != 0:
        lonely.close()  # rank 0 is gone from this barrier: these give up too
    tally.finish()


if __name__ == "__main__":
    main()
