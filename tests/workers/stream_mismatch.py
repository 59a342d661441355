"""A mismatch found while data moves leaves the communicator unusable (no hang, no retry).

Usage: COLLECTIVES_SHM=1 COLLECTIVES_CHECK=0 mpiexec -n 2 python -m tests.workers.stream_mismatch

With the agreement check off, rank 0 all-reduces 1000 elements and rank 1 1001: the
shared-memory transport finds the ranks' message streams out of step and both ranks raise
MismatchError naming the other rank. The next collective then raises CollectiveError
("unusable ... out of step") at once on every rank, as after a timeout, instead of running
on streams that no longer line up.
"""
from __future__ import annotations

import time

import numpy as np

import collectives
from collectives.errors import CollectiveError, MismatchError
from tests.workers.common import Tally


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    other = 1 - comm.rank
    x = np.ones(1000 + comm.rank, np.float32)
    start = time.monotonic()
    try:
        comm.allreduce(x, algorithm="ring")
        tally.check(False, "the out-of-step all-reduce returned")
    except MismatchError as error:
        tally.check(f"rank {other}" in str(error), f"the error does not name rank {other}: {error}")
    tally.check(time.monotonic() - start < 10, f"took {time.monotonic() - start:.1f} s (a timeout?)")
    try:
        comm.allreduce(np.ones(10, np.float32), algorithm="ring")
        tally.check(False, "the communicator ran a collective after its streams went out of step")
    except MismatchError as error:
        tally.check(False, f"the next collective moved data again: {error}")
    except CollectiveError as error:
        tally.check("unusable" in str(error) and "out of step" in str(error), f"unclear error: {error}")
    tally.finish()


if __name__ == "__main__":
    main()
