"""close() after an interrupt that landed as the agreement records' exchange ended.

Usage: mpiexec -n 2 python -m tests.workers.interrupted_close
Rank 0 is interrupted (a fault injected where a signal may land) right after an exchange
of the records completed, before the next turn's persistent receives started: the
transport then still held the completed, inactive receives, and close() asked MPI to
cancel them and raised mpi4py's own exception ("Attempt to cancel an inactive persistent
request"), which uncaught ended the job (the seventy-first review). Every rank must close
cleanly.
"""
from __future__ import annotations

import numpy as np

import collectives
from collectives.transport import mpi as mpi_transport
from tests.workers.common import Tally


def interrupt_third_start(rank: int) -> None:
    """Rank `rank`'s third start of the records' receives raises, as an interrupt would."""
    start, calls = mpi_transport._Records._start, [0]

    def started(self, turn):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return start(self, turn)

    if rank == 0:
        mpi_transport._Records._start = started


def main() -> None:
    from mpi4py import MPI

    tally = Tally(MPI.COMM_WORLD.rank)
    interrupt_third_start(MPI.COMM_WORLD.rank)
    comm = collectives.init(timeout=3)
    try:
        for _ in range(5):
            comm.allreduce(np.ones(8), algorithm="ring")
        tally.check(False, "no call was interrupted or refused")
    except (KeyboardInterrupt, collectives.CollectiveError):
        pass
    try:
        comm.close()
    except Exception as error:  # noqa: BLE001 - what close raised is the finding
        tally.check(False, f"close raised {type(error).__module__}.{type(error).__name__}: "
                           f"{error}")
    tally.finish()


if __name__ == "__main__":
    main()
