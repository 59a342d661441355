"""StagedMPI on its own: CuPy messages through pinned lanes (forced), and native all-reduce.

Usage: mpiexec -n P python -m tests.workers.gpu_staging
Each rank sends messages of awkward sizes (0 B, 1 B, a chunk +- 1, several chunks) to its
successor while receiving its predecessor's, all posted at once, and checks every byte.
"""
from __future__ import annotations

import time

import cupy as cp
import ml_dtypes
import numpy as np
from mpi4py import MPI

from collectives.transport.mpi import MPITransport
from collectives.transport.staging import CHUNK_BYTES, StagedMPI
from tests.workers.common import Tally

SIZES = (0, 1, 1000, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 5)


def payload(nbytes: int, sender: int, index: int) -> cp.ndarray:
    return ((cp.arange(nbytes, dtype=cp.int64) * 31 + sender * 7 + index) % 251).astype(cp.uint8)


def main() -> None:
    mpi = MPITransport(MPI.COMM_WORLD.Dup())
    t = StagedMPI(mpi, cuda_aware=False)
    rank, size = t.rank, t.size
    tally = Tally(rank)
    deadline = time.monotonic() + 120
    succ, pred = (rank + 1) % size, (rank - 1) % size
    for tag in (5, 6):  # twice: lanes and pinned slots are reused
        inbox = [cp.full(n, 255, cp.uint8) for n in SIZES]
        recvs = [t.irecv(buf, pred, tag) for buf in inbox]
        sends = [t.isend(payload(n, rank, i), succ, tag) for i, n in enumerate(SIZES)]
        remaining = list(recvs)
        while remaining:  # wait_any as the executor does
            remaining.pop(t.wait_any(remaining, deadline, "staged receives"))
        t.wait_all(sends, deadline, "staged sends")
        for i, (n, buf) in enumerate(zip(SIZES, inbox)):
            tally.check(bool((buf == payload(n, pred, i)).all()) if n else True,
                        f"tag {tag}: message {i} of {n} bytes from rank {pred} differs")
    for dtype in (np.float16, ml_dtypes.bfloat16, np.float32, np.int64):
        x = cp.full(3 * CHUNK_BYTES + 1, rank + 1, dtype)
        t.native_allreduce(x, x, "sum", deadline)
        want = size * (size + 1) // 2
        tally.check(bool((x.astype(cp.float64) == want).all()), f"native {np.dtype(dtype)}")
    tally.finish()


if __name__ == "__main__":
    main()
