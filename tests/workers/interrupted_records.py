"""A rank whose collective is interrupted before the ranks exchanged their agreement records
(a signal handler that raises, as a user's `with timeout(...)` helper does) while its peer
is late: the communicator is unusable on every rank from then on, and no rank completes
the interrupted call.

Usage: mpiexec -n 2 python -m tests.workers.interrupted_records ride|large|before
  ride    rank 0's wait for the records is interrupted; the call is small enough that its
          data rides with the records
  large   the same for a call whose data moves after the records (a plan)
  before  rank 0 is interrupted before it sends its record: KeyboardInterrupt raised by the
          finite check of `check_finite=True` (a fault injected where a signal may land);
          with COLLECTIVES_CHECK=0 too, where only that check exchanges records
"""
from __future__ import annotations

import signal
import sys
import time

import numpy as np

import collectives
from collectives.calls import allreduce as allreduce_module
from tests.workers.common import Tally, rank_data

LATE_SECONDS = 2.0
ALARM_SECONDS = 0.5


class Interrupted(Exception):
    """What the signal handler raises."""


def main() -> None:
    mode = sys.argv[1]
    count = 100_000 if mode == "large" else 4
    comm = collectives.init(timeout=30)
    rank = comm.rank
    tally = Tally(rank)
    x = rank_data(count, np.float64, rank)
    if rank == 0 and mode == "before":
        def interrupted_check(array):
            raise KeyboardInterrupt

        finite_check, allreduce_module._finite = allreduce_module._finite, interrupted_check
        expected: type = KeyboardInterrupt
    elif rank == 0:
        def interrupt(signum, frame):
            raise Interrupted("the user's alarm")

        signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, ALARM_SECONDS)
        expected = Interrupted
    else:
        time.sleep(LATE_SECONDS)
        expected = collectives.PeerError
    try:
        comm.allreduce(x, check_finite=mode == "before")
        tally.check(False, f"call 1 completed; expected {expected.__name__}")
    except BaseException as error:  # noqa: BLE001 - the type is what is checked
        tally.check(type(error) is expected, f"call 1 raised {type(error).__name__}: {error}")
        if rank == 1:
            tally.check("rank 0 gave up on collective #1" in str(error),
                        f"call 1's PeerError does not name rank 0: {error}")
    if rank == 0 and mode == "before":
        allreduce_module._finite = finite_check
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
