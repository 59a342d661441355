"""A peer that gave up on a later collective does not fail the one it completed.

Usage: mpiexec -n 2 python -m tests.workers.gave_up_later

Rank 0 is slow to finish collective #2 (MPI's own all-reduce; a sleep before its wait
stands for a descheduled process). Meanwhile rank 1 completes #2 and is interrupted as #3
begins, so it tells rank 0 that it gave up on #3. Rank 0's #2 completed with every rank's
data: it must return the right result (the seventeenth review: the notice check after a
native collective raised PeerError there), and its #3 must raise PeerError.
"""
from __future__ import annotations

import time

import numpy as np

import collectives
from tests.workers.common import Tally

SLOW = 1.0


def main() -> None:
    comm = collectives.init(timeout=10)
    tally = Tally(comm.rank)
    transport = comm._transport
    x = np.arange(4, dtype=np.float32) + comm.rank
    want = np.arange(4, dtype=np.float32) * 2 + 1
    comm.allreduce(x, algorithm="native")  # #1: everyone is here
    if comm.rank == 0:
        complete = transport._complete

        def slow_complete(request, deadline, what):
            time.sleep(SLOW)
            return complete(request, deadline, what)

        transport._complete = slow_complete
        try:
            y = comm.allreduce(x, algorithm="native")  # #2
            tally.check(np.array_equal(y, want), f"#2 returned {y}")
        except collectives.CollectiveError as error:
            tally.check(False, f"#2 completed on every rank but raised {error}")
        transport._complete = complete
        try:
            comm.allreduce(x, algorithm="native")  # #3
            tally.check(False, "#3 returned although rank 1 gave up on it")
        except collectives.CollectiveError as error:
            tally.check(isinstance(error, collectives.PeerError)
                        and "rank 1 gave up on collective #3" in str(error), f"#3: {error}")
    else:
        tally.check(np.array_equal(comm.allreduce(x, algorithm="native"), want), "#2")
        begin = transport.begin

        def interrupted(seq: int) -> None:
            raise KeyboardInterrupt  # Ctrl-C as #3 begins

        transport.begin = interrupted
        try:
            comm.allreduce(x, algorithm="native")  # #3
            tally.check(False, "#3 returned after its interrupt")
        except KeyboardInterrupt:
            pass
        transport.begin = begin
    tally.finish()


if __name__ == "__main__":
    main()
