"""init() with ranks whose settings differ, are invalid, or never arrive: every rank raises
a clear error within the timeout, none hangs.

Usage: mpiexec -n P python -m tests.workers.init_settings CASE OUTDIR   (or torchrun)
Each rank sets its own COLLECTIVES_* variables for CASE before init(), then writes the
error it saw to OUTDIR/rank<r>.json; under mpiexec rank 0 ends the job with
MPI_Abort(ABORT) when a rank was left behind (the `absent` case). `cycles` records the
process's open descriptors around CYCLES init/close cycles instead.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import collectives

ABORT = 6
TIMEOUT = "3"
CYCLES = 40

# case -> (variable, value on the last rank, value elsewhere); None: unset
CASES = {
    "local_size": ("COLLECTIVES_LOCAL_SIZE", "1", "2"),
    "grid": ("COLLECTIVES_GRID", "1x2", "2x1"),
    "shm": ("COLLECTIVES_SHM", "1", "0"),
    "check": ("COLLECTIVES_CHECK", "0", "1"),
    "cuda_aware_mpi": ("COLLECTIVES_CUDA_AWARE_MPI", "0", "1"),  # (the thirty-eighth review)
    "invalid_timeout": ("COLLECTIVES_TIMEOUT", "nan", TIMEOUT),
    "invalid_algorithm": ("COLLECTIVES_ALGORITHM", "rign", None),
    "invalid_flag": ("COLLECTIVES_SHM", "maybe", None),
    "invalid_long": ("COLLECTIVES_ALGORITHM", "é" * 400 + "x" * 3000, None),  # beyond the
    # hello's size, in escapes of 6 bytes (cut inside one: the ninety-second review)
}


def main() -> None:
    case, outdir = sys.argv[1], Path(sys.argv[2])
    under_mpi = "PMI_RANK" in os.environ
    rank = int(os.environ["PMI_RANK" if under_mpi else "RANK"])
    size = int(os.environ["PMI_SIZE" if under_mpi else "WORLD_SIZE"])
    os.environ.setdefault("COLLECTIVES_TIMEOUT", TIMEOUT)
    seen: dict[str, object] = {"rank": rank}
    if case in CASES:
        name, odd, usual = CASES[case]
        value = odd if rank == size - 1 else usual
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if under_mpi:
        from mpi4py import MPI  # MPI_Init waits for the slowest rank's imports: not init's time
    else:
        import torch.distributed  # seconds on a loaded machine: not init's time either
    start = time.monotonic()
    if case == "absent" and rank == size - 1:
        seen["error"] = None  # never calls init
    elif case == "cycles":
        seen["descriptors"] = [_descriptors()]
        for _ in range(CYCLES):
            comm = collectives.init()
            comm.allreduce(np.ones(1000, np.float32))
            comm.close()
        for _ in range(CYCLES // 4):  # refused: a bad value on the last rank
            os.environ["COLLECTIVES_TIMEOUT"] = "abc" if rank == size - 1 else TIMEOUT
            try:
                collectives.init()
            except (ValueError, collectives.MismatchError):
                pass
        os.environ["COLLECTIVES_TIMEOUT"] = TIMEOUT
        seen["descriptors"].append(_descriptors())
    else:
        try:
            collectives.init()
            seen["error"] = None
        except Exception as error:  # recorded for the test to judge
            seen["error"], seen["message"] = type(error).__name__, str(error)
    seen["elapsed"] = time.monotonic() - start
    (outdir / f"rank{rank}.json").write_text(json.dumps(seen))
    if case == "absent" and not under_mpi:  # (torchrun ends the job when every rank has)
        _wait_for_every_rank(outdir, size)
    elif case == "absent":
        if rank == 0:
            _wait_for_every_rank(outdir, size)
            MPI.COMM_WORLD.Abort(ABORT)
        time.sleep(60)


def _wait_for_every_rank(outdir: Path, size: int) -> None:
    expected = [outdir / f"rank{r}.json" for r in range(size)]
    deadline = time.monotonic() + 30
    while not all(p.exists() for p in expected) and time.monotonic() < deadline:
        time.sleep(0.05)


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


if __name__ == "__main__":
    main()
