"""The shared-memory transport's node meetings after a failure: the job still ends.

Usage: COLLECTIVES_SHM=1 mpiexec -n 2 python -m tests.workers.shm_meetings MODE OUTDIR
  late-grow     rank 1 comes to a call that grows the shared windows after rank 0 timed out
                there (the check off, so nothing else stops it first)
  grow-vs-close the ranks disagree on the size (the check off): rank 0's call grows the
                windows, rank 1's does not; rank 1 times out and closes while rank 0 waits
                to grow

Each rank writes the error it got to OUTDIR/rank<r>.json, then the program ends normally
(no abort), so each rank closes its transport at exit. Before the node met through the
control window, rank 1 of late-grow went on into MPI_Win_allocate_shared alone (its MPI
barrier met the one rank 0 had abandoned) and hung for good; in grow-vs-close one rank
allocated while the other freed, and both hung.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import collectives

TIMEOUT = 2.0


def main() -> None:
    mode, outdir = sys.argv[1], Path(sys.argv[2])
    comm = collectives.init(timeout=TIMEOUT)
    comm.allreduce(np.ones(1000, np.float32), algorithm="ring")  # the windows: 1 MiB
    count = 1 << 20  # 4 MiB: the windows grow
    if mode == "late-grow" and comm.rank == 1:
        time.sleep(TIMEOUT + 1)
    elif mode == "grow-vs-close" and comm.rank == 1:
        count = 1000
    seen: dict[str, object] = {"rank": comm.rank, "error": None}
    start = time.monotonic()
    try:
        comm.allreduce(np.ones(count, np.float32), algorithm="ring")
    except collectives.CollectiveError as error:
        seen["error"], seen["message"] = type(error).__name__, str(error)
    seen["elapsed"] = time.monotonic() - start
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
