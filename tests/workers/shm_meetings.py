"""The shared-memory transport's node meetings after a failure: the job still ends.

Usage: COLLECTIVES_SHM=1 mpiexec -n 2 python -m tests.workers.shm_meetings MODE OUTDIR
  late-grow     rank 1 comes to a call that grows the shared windows after rank 0 timed out
                there (the check off, so nothing else stops it first)
  grow-vs-close the ranks disagree on the size (the check off): rank 0's call grows the
                windows, rank 1's does not; rank 1 times out and closes while rank 0 waits
                to grow
  held          rank 1 is held between seeing every rank arrive and being ready (as by
                SIGSTOP or swapping) for longer than rank 0's deadline and grace
  interrupted   rank 1 is interrupted (KeyboardInterrupt) right after it arrived
  interrupted-after-allocating
                rank 1 is interrupted right after MPI_Win_allocate_shared returned, before
                the transport kept the new window: the ranks then disagreed on which
                windows exist, and every rank hung in MPI_Win_free at exit (the
                seventy-first review)
  left          rank 1 closes its communicator while rank 0 calls a collective: rank 0 was
                told only after the close's 30 s grace (or its timeout, naming nobody)
  left-grow     the same, rank 0's call growing the windows: it read as ranks disagreeing
                on the arguments (the eighty-third review)
  closed-apart  (np >= 3) the last rank closes 3 s after the others, which tell every rank
                they left after 2 s; all free the windows together, then init() again: a
                second notice the last rank never took waited in the freed communicator,
                and the next communicator's first collective raised PeerError (the
                eighty-sixth review)

Each rank writes the error it got to OUTDIR/rank<r>.json, then the program ends normally
(no abort), so each rank closes its transport at exit. Before the node met through the
control window, rank 1 of late-grow went on into MPI_Win_allocate_shared alone (its MPI
barrier met the one rank 0 had abandoned) and hung for good; in grow-vs-close one rank
allocated while the other freed, and both hung. In the first control-window version, rank
1 of `held` went on alone once it was ready (rank 0's ready word stayed), and rank 0 of
`interrupted` waited 30 s (rank 1 did not say it gave up).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import collectives
from collectives.transport import shm
from collectives.transport.shm import _ARRIVED, _READY, ShmTransport

TIMEOUT = 2.0
GRACE = 2.0  # the transport's wait beyond the deadline for ranks that were ready


def hold_before_ready(transport: ShmTransport) -> None:
    """Rank 1 stops between arriving and being ready, past rank 0's deadline and grace."""
    check = transport._same_purpose

    def held(meeting: int, purpose: int) -> None:
        time.sleep(TIMEOUT + GRACE + 1)
        check(meeting, purpose)

    transport._same_purpose = held


class _InterruptAfterArriving:
    """The control window, raising KeyboardInterrupt after the Sync that follows the
    arrival (the second Sync of a meeting), as a signal handler may, once the other ranks
    are ready (they then wait on this rank's ready word, no longer on notices)."""

    def __init__(self, transport: ShmTransport):
        self._transport, self._window, self._syncs = transport, transport._ctrl_win, 0

    def Sync(self) -> None:  # noqa: N802 (MPI.Win's name)
        self._window.Sync()
        self._syncs += 1
        if self._syncs == 2:
            faults, me = self._transport._faults, self._transport.me
            arrived = faults[me][_ARRIVED]
            others = [f for i, f in enumerate(faults) if i != me]
            limit = time.monotonic() + TIMEOUT
            while not all(f[_READY] >= arrived for f in others) and time.monotonic() < limit:
                self._window.Sync()
            raise KeyboardInterrupt

    def __getattr__(self, name):
        return getattr(self._window, name)


def interrupt_after_allocating() -> None:
    """The next window allocation returns, then a KeyboardInterrupt lands."""
    allocate = shm._allocate

    def allocated_then_interrupted(node, nbytes):
        allocate(node, nbytes)
        raise KeyboardInterrupt

    shm._allocate = allocated_then_interrupted


def closed_apart(outdir: Path) -> None:
    comm = collectives.init(timeout=10)
    comm.allreduce(np.ones(1000, np.float32), algorithm="ring")  # (the windows)
    if comm.rank == comm.size - 1:
        time.sleep(3)
    comm.close()
    comm = collectives.init(timeout=10)
    seen: dict[str, object] = {"rank": comm.rank, "error": None}
    time.sleep(0.5)  # (the notice arrives)
    try:
        for _ in range(3):
            seen["sum"] = float(comm.allreduce(np.ones(4, np.float32), algorithm="ring")[0])
    except collectives.CollectiveError as error:
        seen["error"], seen["message"] = type(error).__name__, str(error)
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))


def main() -> None:
    mode, outdir = sys.argv[1], Path(sys.argv[2])
    if mode == "closed-apart":
        return closed_apart(outdir)
    leaving = mode.startswith("left")  # (the transport's own timeout and grace: no race)
    comm = collectives.init(timeout=3 * TIMEOUT if leaving else TIMEOUT)
    transport = comm._transport
    assert isinstance(transport, ShmTransport), transport
    if not leaving:
        transport._close_grace = GRACE
    comm.allreduce(np.ones(1000, np.float32), algorithm="ring")  # the windows: 1 MiB
    count = 1000 if mode == "left" else 1 << 20  # 4 MiB: the windows grow
    seen: dict[str, object] = {"rank": comm.rank, "error": None}
    start = time.monotonic()
    if comm.rank == 1 and leaving:
        comm.close()
        seen["elapsed"] = time.monotonic() - start
        (outdir / "rank1.json").write_text(json.dumps(seen))
        return
    if comm.rank == 1:
        if mode == "late-grow":
            time.sleep(TIMEOUT + 1)
        elif mode == "grow-vs-close":
            count = 1000
        elif mode == "held":
            hold_before_ready(transport)
        elif mode == "interrupted":
            transport._ctrl_win = _InterruptAfterArriving(transport)
        elif mode == "interrupted-after-allocating":
            interrupt_after_allocating()
        start = time.monotonic()
    try:
        comm.allreduce(np.ones(count, np.float32), algorithm="ring")
    except (collectives.CollectiveError, KeyboardInterrupt) as error:
        seen["error"], seen["message"] = type(error).__name__, str(error)
    seen["elapsed"] = time.monotonic() - start
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
