"""Messages the shared-memory transport sends through MPI cannot be crossed with others.

Usage: mpiexec -n P python -m tests.workers.shm_matching   (P >= 2, one node)

Ranks 0 and 1 exchange; the others only take part in creating and closing the transports.

1. Another MPI message from the same source with the same tag, sent first on the
   transport's communicator (the plain-MPI path, or a message left over from a collective
   that went wrong), is not taken by a receive of a message routed through MPI by the shm
   transport (a staging buffer): that receive gets its own message, no truncation.
   This is the soak's one failure: an 86-byte receive landing on an 88-byte message.
2. Per-pair streams out of step (rank 0 sent a message rank 1 never received, then both
   run the next "collective", where rank 1 answers rank 0's message): rank 1 raises
   MismatchError naming both ranks, and rank 0, which waits for the answer, raises
   MismatchError too at once, not a truncation and not a timeout. Later exchanges on either
   transport raise it again at once.
"""
from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

from collectives.errors import CollectiveTimeout, MismatchError
from collectives.transport.mpi import MPITransport
from collectives.transport.shm import ShmTransport
from tests.workers.common import Tally

DEADLINE = 30.0
SHORT, LONG = 43, 44  # fp16 elements: 86 and 88 bytes, neighbouring ring segments at p = 3


def values(n: int, k: int) -> np.ndarray:
    return (np.arange(n) + 100 * k).astype(np.float16)


def foreign_message_same_tag(tally: Tally, me: int) -> None:
    t = ShmTransport(MPITransport(MPI.COMM_WORLD.Dup()), close_grace=5.0)
    deadline = time.monotonic() + DEADLINE
    t.work_buffer(1024, np.uint8, deadline=deadline)  # the window exists; our buffers lie outside
    if me == 0:
        stray = values(LONG, 1)
        staged = values(SHORT, 2)
        first = t.mpi.isend(stray, 1, 7)  # same source, same tag, plain MPI, sent first
        second = t.isend(staged, 1, 7)  # through MPI too: staged is not in the window
        tally.check(second.offset == -1, "a private buffer was not sent through MPI")
        t.wait_all([first], deadline, "the plain MPI message")
        t.wait_all([second], deadline, "the shm message sent through MPI")
    elif me == 1:
        got = np.zeros(SHORT, np.float16)
        try:
            t.wait_all([t.irecv(got, 0, 7)], deadline, "the shm message sent through MPI")
            tally.check(np.array_equal(got, values(SHORT, 2)), f"shm receive got {got[:4]}...")
            stray = np.zeros(LONG, np.float16)
            t.mpi.wait_all([t.mpi.irecv(stray, 0, 7)], deadline, "the plain MPI message")
            tally.check(np.array_equal(stray, values(LONG, 1)), f"plain receive got {stray[:4]}...")
        except MPI.Exception as error:
            tally.check(False, f"shm receive took the other message: {error.Get_error_string()}")
            leftover = np.zeros(SHORT, np.float16)  # the shm message, still unmatched
            t.mpi.wait_all([t.mpi.irecv(leftover, 0, 7)], deadline, "the leftover message")
    t.close()


def streams_out_of_step(tally: Tally, me: int) -> None:
    t = ShmTransport(MPITransport(MPI.COMM_WORLD.Dup()), close_grace=5.0)
    deadline = time.monotonic() + 10.0
    t.work_buffer(1024, np.uint8, deadline=deadline)
    start = time.monotonic()
    error: Exception | None = None
    requests: list = []
    if me == 0:
        t.isend(values(LONG, 1), 1, 5)  # rank 1 never receives this one
    if me in (0, 1):
        try:  # the next "collective": rank 1 answers once it has rank 0's message
            requests.append(t.irecv(np.zeros(SHORT, np.float16), 1 - me, 6))  # may raise here
            if me == 0:
                requests.append(t.isend(values(SHORT, 2), 1, 6))
            t.wait_all(requests, deadline, "the next collective")
            if me == 1:
                t.wait_all([t.isend(values(SHORT, 3), 0, 6)], deadline, "the answer")
        except (MismatchError, CollectiveTimeout, MPI.Exception) as caught:
            error = caught
        seconds = time.monotonic() - start
        tally.check(isinstance(error, MismatchError),
                    f"rank {me}: got {error!r}, not MismatchError")
        text = str(error)
        tally.check("rank 0" in text and "rank 1" in text and "out of step" in text,
                    f"rank {me}: the error does not name both ranks: {text}")
        tally.check(seconds < 5.0, f"rank {me}: took {seconds:.1f} s to notice")
        if me == 1:
            tally.check("tag 5 and 88 bytes" in text and "tag 6 and 86 bytes" in text,
                        f"rank 1: expected vs got missing: {text}")
        try:
            later = t.irecv(np.zeros(SHORT, np.float16), 1 - me, 8)
            t.wait_all([later], time.monotonic() + 2.0, "a later wait")
            tally.check(False, f"rank {me}: a later wait went on after the streams broke")
        except MismatchError:
            pass
        except CollectiveTimeout as late:
            tally.check(False, f"rank {me}: a later wait timed out instead: {late}")
    t.close()


def main() -> None:
    tally = Tally(MPI.COMM_WORLD.Get_rank())
    me = MPI.COMM_WORLD.Get_rank()
    foreign_message_same_tag(tally, me)
    MPI.COMM_WORLD.Barrier()
    streams_out_of_step(tally, me)
    tally.finish()


if __name__ == "__main__":
    main()
