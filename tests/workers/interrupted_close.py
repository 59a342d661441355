"""close() interrupted, or after an interrupt: it ends cleanly, and the next communicator
gets nothing of this one.

Usage: mpiexec -n 2 python -m tests.workers.interrupted_close MODE
  records  rank 0 is interrupted right after an exchange of the agreement records
           completed, before the next turn's persistent receives started: the transport
           still held the completed, inactive receives, and close() asked MPI to cancel
           them and raised mpi4py's own exception ("Attempt to cancel an inactive
           persistent request"), which uncaught ended the job (the seventy-first review)
  leaving  rank 0 is interrupted in close()'s wait for the others, after rank 1 closed:
           rank 0 told the others it left (a message nobody receives now) and freed its
           communicators; the next communicator got the context id back and took the
           notice for its own: PeerError on its second call (the seventy-fourth review)
The interrupts are injected where a signal may land.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from mpi4py import MPI

import collectives
from collectives.transport import mpi as mpi_transport
from tests.workers.common import Tally


def interrupt_third_start() -> None:
    """The third start of the records' receives raises, as an interrupt would."""
    start, calls = mpi_transport._Records._start, [0]

    def started(self, turn):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return start(self, turn)

    mpi_transport._Records._start = started


def interrupt_leaving() -> None:
    """close()'s wait for the others raises once they have closed, as an interrupt would."""
    def settle(requests, deadline):
        time.sleep(0.5)  # rank 1 closes meanwhile
        raise KeyboardInterrupt

    mpi_transport._settle, restore = settle, mpi_transport._settle

    def restored(requests, deadline):
        mpi_transport._settle = restore
        return settle(requests, deadline)

    mpi_transport._settle = restored


def main() -> None:
    mode, rank = sys.argv[1], MPI.COMM_WORLD.rank
    tally = Tally(rank)
    if rank == 0 and mode == "records":
        interrupt_third_start()
    comm = collectives.init(timeout=3)
    try:  # (fewer calls than the next communicator's: a notice "left after #2" stops #3)
        for _ in range(2 if mode == "leaving" else 5):
            comm.allreduce(np.ones(8), algorithm="ring")
    except (KeyboardInterrupt, collectives.CollectiveError):
        pass
    if rank == 0 and mode == "leaving":
        interrupt_leaving()
    try:
        comm.close()
    except KeyboardInterrupt:
        pass
    except Exception as error:  # noqa: BLE001 - what close raised is the finding
        tally.check(False, f"close raised {type(error).__module__}.{type(error).__name__}: "
                           f"{error}")
    MPI.COMM_WORLD.Barrier()
    fresh = collectives.init(timeout=3)
    for i in range(5):
        try:
            y = fresh.allreduce(np.full(4, rank + 1.0))
        except collectives.CollectiveError as error:
            tally.check(False, f"the next communicator's call {i}: {error}")
            break
        tally.check(bool((y == 3.0).all()), f"the next communicator's call {i}: {y}")
    fresh.close()
    tally.finish()


if __name__ == "__main__":
    main()
