"""Shared-memory and MPI exchange give the same bits, window growth stays bounded.

Usage: mpiexec -n P python -m tests.workers.shm_vs_mpi ALG[,ALG...]
Two communicators in one process, one per transport; random float32/float64/bfloat16 data
(sums depend on the order of additions), sizes that grow and shrink, several layouts.
"""
from __future__ import annotations

import os
import sys

import ml_dtypes
import numpy as np

import collectives
from tests.workers.common import Tally, digest, everyone

SIZES = (0, 1, 5, 1000, (1 << 19) + 3, 7, (1 << 20) + 11, 3)  # up to ~2 segments of 1 MiB
DTYPES = (np.float32, np.float64, ml_dtypes.bfloat16)
LAYOUTS = ("contiguous", "out", "inplace", "strided")


def data(count: int, dtype, rank: int, layout: str) -> np.ndarray:
    values = np.random.default_rng(1000 * rank + count).standard_normal(count).astype(dtype)
    if layout == "strided":
        spaced = np.zeros(2 * count, dtype)
        spaced[::2] = values
        return spaced[::2]
    return values


def allreduce(comm, x: np.ndarray, layout: str, op: str, algorithm: str) -> np.ndarray:
    if layout == "out":
        return comm.allreduce(x, op=op, algorithm=algorithm, out=np.full_like(x, 7))
    if layout == "inplace":
        return comm.allreduce(x, op=op, algorithm=algorithm, out=x)
    return comm.allreduce(x, op=op, algorithm=algorithm)


def main() -> None:
    algorithms = sys.argv[1].split(",")
    os.environ["COLLECTIVES_SHM"] = "1"
    shm = collectives.init()
    os.environ["COLLECTIVES_SHM"] = "0"
    mpi = collectives.init()
    tally = Tally(shm.rank)
    tally.check(mpi.transport_name == "mpi", f"COLLECTIVES_SHM=0 gave {mpi.transport_name}")
    tally.check(shm.size == 1 or shm.transport_name == "mpi+shm",
                f"COLLECTIVES_SHM=1 gave {shm.transport_name}")
    for algorithm in algorithms:
        for dtype in DTYPES:
            for count in SIZES:
                small = count < 1 << 16
                if not small and dtype is not np.float32:
                    continue
                for op in ("sum", "avg", "max") if small else ("sum",):
                    for layout in LAYOUTS if small else ("contiguous", "inplace"):
                        case = f"{algorithm} {np.dtype(dtype)} count={count} op={op} {layout}"
                        x = data(count, dtype, shm.rank, layout)
                        before = x.copy()
                        got = allreduce(shm, x, layout, op, algorithm)
                        if layout != "inplace":
                            tally.check(np.array_equal(x, before), f"{case}: input modified")
                        x = before.copy() if layout != "strided" else data(count, dtype, shm.rank, layout)
                        want = allreduce(mpi, x, layout, op, algorithm)
                        tally.check(digest(got) == digest(want), f"{case}: shm and mpi bits differ")
                        digests = everyone(digest(got))
                        tally.check(len(set(digests)) == 1, f"{case}: ranks differ in bits")
    tally.finish()


if __name__ == "__main__":
    main()
