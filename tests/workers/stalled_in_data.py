"""A rank held (a signal handler that sleeps) in the middle of a large all-reduce while the
others time out and end their programs: it must raise the library's error.

Usage: mpiexec -n 3 python -m tests.workers.stalled_in_data ALGORITHM OUTDIR

Rank 1 comes back after the others have ended: MPICH then fails the transfer it had begun
with them (a single-copy read from a process that is gone), and that MPI error escaped as
mpi4py's own exception (the sixty-fifth review). Each rank writes what it raised to
OUTDIR/rank<r>.json.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

import collectives

TIMEOUT = 2.0
HELD = TIMEOUT + 4.0


def main() -> None:
    algorithm, outdir = sys.argv[1], Path(sys.argv[2])
    comm = collectives.init(timeout=TIMEOUT)
    x = np.ones(8 << 20, np.float32)  # 32 MiB: large messages, MPI's rendezvous
    comm.allreduce(x[:10])
    if comm.rank == 1:
        signal.signal(signal.SIGALRM, lambda *_: time.sleep(HELD))
        signal.setitimer(signal.ITIMER_REAL, 0.02)  # fires once the all-reduce has begun
    seen: dict[str, object] = {"rank": comm.rank}
    try:
        comm.allreduce(x, algorithm=algorithm)
        seen["raised"] = None
    except Exception as error:  # what a user's `except` would see
        seen["raised"] = f"{type(error).__module__}.{type(error).__name__}"
        seen["message"] = str(error)
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
