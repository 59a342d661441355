"""A rank whose collective is interrupted between its start and its data (a signal handler
that raises, as a user's `with timeout(...)` helper does) while its peer is late: the
communicator is unusable on every rank from then on, and no rank completes the call.

Usage: mpiexec -n 2 python -m tests.workers.interrupted_records MODE
  ride    a real SIGALRM lands in rank 0's wait for the records of a call small enough that
          its data rides with them
  large   the same for a call whose data moves after the records (a plan)
  begin   rank 0 is interrupted as the collective begins, before the call's own error
          handling starts (in `transport.begin`; the tenth review)
  before  rank 0 is interrupted before it sends its record: in the finite scan of
          `check_finite=True`; with COLLECTIVES_CHECK=0 too, where only that scan's call
          exchanges records (the tenth review)
  after   rank 0 is interrupted after the records came back, before the data moved (the
          tenth review: the peers then waited out their timeout)
The faults of begin, before and after are injected where a signal may land.
"""
from __future__ import annotations

import signal
import sys
import time

import numpy as np

import collectives
from collectives.calls import allreduce as allreduce_module
from tests.workers.common import Tally, rank_data

ALARM_SECONDS = 0.5
GAVE_UP_TAG = 77  # rank 0 to rank 1 over COMM_WORLD, outside the library: call 1 raised


class Interrupted(Exception):
    """What the interrupt raises (an Exception, as a user's timeout helper raises)."""


def interrupt(*args) -> None:
    raise Interrupted("the user's alarm")


def inject(comm, mode: str) -> None:
    """Rank 0's interrupt for `mode`, on the first collective."""
    if mode in ("ride", "large"):
        signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, ALARM_SECONDS)
    elif mode == "begin":
        comm._ctx.transport.begin = interrupt
    elif mode == "before":
        allreduce_module._finite = interrupt
    else:
        agreement = comm._ctx.agreement
        agreement._all_same = interrupt


def wait_for_rank_0(seconds: float = 10.0) -> None:
    """Until rank 0's call 1 raised, or `seconds` passed (a rank 0 that waits for rank 1
    then fails its check instead of hanging)."""
    from mpi4py import MPI

    request = MPI.COMM_WORLD.irecv(source=0, tag=GAVE_UP_TAG)
    deadline = time.monotonic() + seconds
    while not request.test()[0] and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> None:
    mode = sys.argv[1]
    count = 100_000 if mode in ("large", "after") else 4
    comm = collectives.init(timeout=30)
    rank = comm.rank
    tally = Tally(rank)
    x = rank_data(count, np.float64, rank)
    if rank == 0:
        saved = (comm._ctx.transport.begin, allreduce_module._finite)
        inject(comm, mode)
        expected: type = Interrupted
    else:
        if mode != "after":  # (after: rank 0 is interrupted only once rank 1's record came)
            wait_for_rank_0()
        expected = collectives.PeerError
    try:
        comm.allreduce(x, check_finite=mode == "before")
        tally.check(False, f"call 1 completed; expected {expected.__name__}")
    except Exception as error:  # noqa: BLE001 - the type is what is checked
        tally.check(type(error) is expected, f"call 1 raised {type(error).__name__}: {error}")
        if rank == 1:
            tally.check("rank 0 gave up on collective #1" in str(error),
                        f"call 1's PeerError does not name rank 0: {error}")
    if rank == 0:
        if mode != "after":
            from mpi4py import MPI

            MPI.COMM_WORLD.send(None, dest=1, tag=GAVE_UP_TAG)
        comm._ctx.transport.begin, allreduce_module._finite = saved
        comm._ctx.agreement.__dict__.pop("_all_same", None)
    for call in (2, 3):
        try:
            comm.allreduce(x)
            tally.check(False, f"call {call} completed on an unusable communicator")
        except collectives.CollectiveError as error:
            tally.check(type(error) is collectives.CollectiveError
                        and "this communicator is unusable since" in str(error),
                        f"call {call} raised {type(error).__name__}: {error}")
    tally.finish()


if __name__ == "__main__":
    main()
