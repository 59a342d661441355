"""Point-to-point on one rank: messages to itself.

Usage: mpiexec -n 1 python -m tests.workers.p2p_alone
"""
from __future__ import annotations

import numpy as np

import collectives
from tests.workers.common import Tally

CYCLES = 800  # MPICH runs out of communicators after about 680 that are never freed


def main() -> None:
    tally = Tally(0)
    comm = collectives.init(timeout=10)
    for count in (1000, 1 << 18):
        for shift in (0, 1):  # received into the sent array itself, or overlapping it: it
            base = np.arange(count + 1.0)  # aborted the process in MPICH's memcpy (the
            x = base[:count]  # eighty-second review)
            sent = comm.isend(x, dst=0, tag=2)
            got = comm.recv(base[shift:shift + count], src=0, tag=2)
            sent.wait()
            tally.check(np.array_equal(got, np.arange(count + 0.0)),
                        f"{count} into itself shifted by {shift}: {got[:3]}")
    comm.close()
    cycle = 0
    try:  # a message's handle dropped (a send: fire and forget; a receive) kept every MPI
        for cycle in range(CYCLES):  # communicator of its Communicator for good
            comm = collectives.init(timeout=10)
            comm.isend(np.full(2, float(cycle)), dst=0, tag=1)
            got = comm.recv(np.empty(2), src=0, tag=1)[0]  # (not the last cycle's message)
            if got != cycle:
                tally.check(False, f"cycle {cycle} received {got}")
            comm.irecv(np.empty(2), src=0, tag=1)  # its message comes after: close drains it
            comm.isend(np.full(2, -1.0), dst=0, tag=1)
            comm.close()
    except Exception as error:  # noqa: BLE001 - any error is the failure
        tally.check(False, f"init/close cycle {cycle} with dropped messages: {error!s:.300}")
    tally.finish()


if __name__ == "__main__":
    main()
