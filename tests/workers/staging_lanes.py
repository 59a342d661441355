"""StagedMPI's lanes: messages cut into chunks through two pinned slots, matched in order.

Usage: mpiexec -n P python -m tests.workers.staging_lanes gpu|host
`gpu`: CuPy buffers and the real CudaCopies. `host`: NumPy stands in for device memory and
`LateCopies` for the CUDA side: a copy lands only when its event is polled done, a few polls
later, so a lane that sends a slot before its copy finished sends stale bytes and fails.
Each rank sends messages of awkward sizes (0 B, 1 B, a chunk +- 1, several chunks) to its
successor while receiving its predecessor's, everything posted at once, twice (slots and
lanes are reused), then runs native all-reduces through the host copy.
"""
from __future__ import annotations

import sys
import time

import ml_dtypes
import numpy as np
from mpi4py import MPI

from collectives.transport.mpi import MPITransport
from collectives.transport.staging import CHUNK_BYTES, StagedMPI
from tests.workers.common import Tally

SIZES = (0, 1, 1000, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 5)
LATE_POLLS = 3


class _LateEvent:
    def __init__(self):
        self.polls, self.land = 0, None

    def arm(self, land) -> None:
        assert self.land is None, "event re-recorded while its copy is pending"
        self.polls, self.land = 0, land


class LateCopies:
    """CudaCopies' methods on NumPy arrays; an event's copy lands LATE_POLLS polls after it."""

    def pinned(self, nbytes: int) -> np.ndarray:
        return np.full(nbytes, 0xEE, np.uint8)  # garbage until a copy lands

    def event(self) -> _LateEvent:
        return _LateEvent()

    def to_host(self, host, buf, lo, hi, event=None) -> None:
        def land():
            host[: hi - lo] = buf.view(np.uint8)[lo:hi]

        land() if event is None else event.arm(land)

    def to_device(self, buf, lo, hi, host, event=None) -> None:
        snapshot = host[: hi - lo].copy()  # what the host buffer holds at the copy's turn

        def land():
            buf.view(np.uint8)[lo:hi] = snapshot

        land() if event is None else event.arm(land)

    def done(self, event: _LateEvent) -> bool:
        if event.land is not None:
            event.polls += 1
            if event.polls < LATE_POLLS:
                return False
            event.land, land = None, event.land
            land()
        return True

    def synchronize(self) -> None:
        pass  # copies without an event land at once


def main() -> None:
    on_gpu = sys.argv[1] == "gpu"
    if on_gpu:
        import cupy as xp

        copies = None
    else:
        xp, copies = np, LateCopies()
    t = StagedMPI(MPITransport(MPI.COMM_WORLD.Dup()), cuda_aware=False, copies=copies)
    rank, size = t.rank, t.size
    tally = Tally(rank)
    deadline = time.monotonic() + 120
    succ, pred = (rank + 1) % size, (rank - 1) % size

    def payload(nbytes: int, sender: int, index: int):
        values = (np.arange(nbytes, dtype=np.int64) * 31 + sender * 7 + index) % 251
        return xp.asarray(values.astype(np.uint8))

    for tag in (5, 6):
        inbox = [xp.full(n, 255, np.uint8) for n in SIZES]
        recvs = [t.irecv(buf, pred, tag) for buf in inbox]
        sends = [t.isend(payload(n, rank, i), succ, tag) for i, n in enumerate(SIZES)]
        remaining = list(recvs)
        while remaining:  # wait_any as the executor does
            remaining.pop(t.wait_any(remaining, deadline, "staged receives"))
        t.wait_all(sends, deadline, "staged sends")
        for i, (n, buf) in enumerate(zip(SIZES, inbox)):
            same = bool((buf == payload(n, pred, i)).all())
            tally.check(same, f"tag {tag}: message {i} of {n} bytes from rank {pred} differs")
    for dtype in (np.float16, ml_dtypes.bfloat16, np.float32, np.int64):
        x = xp.full(3 * CHUNK_BYTES + 1, rank + 1, dtype)
        t.native_allreduce(x, x, "sum", deadline)
        got = np.asarray(x.get() if on_gpu else x).astype(np.float64)
        tally.check(bool((got == size * (size + 1) // 2).all()), f"native {np.dtype(dtype)}")
    if size > 1:
        check_abandoned_receive(copies if not on_gpu else None, xp, tally)
    tally.finish()


def check_abandoned_receive(copies, xp, tally: Tally) -> None:
    """Rank 0's staged receive times out and is abandoned; rank 1 sends late. The lanes'
    chunk receives stayed posted in MPI and their pinned slots were let go: the late
    chunks landed in them (0xab in memory the pool hands out again; the 115th review)."""
    from collectives.errors import CollectiveTimeout

    world = MPI.COMM_WORLD
    t = StagedMPI(MPITransport(world.Dup()), cuda_aware=False, copies=copies)
    if t.rank == 0:
        request = t.irecv(xp.zeros(2 * CHUNK_BYTES, np.uint8), 1, 5)
        try:
            t.wait_all([request], time.monotonic() + 0.3, "a message sent late")
        except CollectiveTimeout:
            pass
        hosts = [slot.host for lane in t._lanes.values() for slot in (*lane.free, *lane.busy)]
        t.abandon([], [request])
        world.send(None, dest=1, tag=99)
        world.recv(source=1, tag=98)  # its send has given up
        written = [int(np.asarray(host.get() if hasattr(host, "get") else host)[0])
                   for host in hosts]
        tally.check(0xAB not in written, f"abandoned chunk receives written: {written}")
    elif t.rank == 1:
        world.recv(source=0, tag=99)
        try:
            t.wait_all([t.isend(xp.full(2 * CHUNK_BYTES, 0xAB, np.uint8), 0, 5)],
                       time.monotonic() + 1.0, "a late send")
        except CollectiveTimeout:
            t.abandon([], [])
        world.send(None, dest=0, tag=98)


if __name__ == "__main__":
    main()
