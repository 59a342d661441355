"""comm.abort() after the with-block closed the communicator still ends the job, with the
code given (the sixteenth review: a raw mpi4py "Invalid communicator", then the watchdog's
SIGALRM).

Usage: mpiexec -n 2 python -m tests.workers.abort_after_close
"""
from __future__ import annotations

import time

import numpy as np

import collectives

ABORT = 6


def main() -> None:
    with collectives.init() as comm:
        comm.allreduce(np.ones(4, np.float32))
    if comm.rank == 0:
        comm.abort(ABORT)
    time.sleep(60)  # ended by rank 0's abort


if __name__ == "__main__":
    main()
