"""Point-to-point messages beside the collectives: values, any dtype, a ring of sends,
errors for bad peers and sizes, a receive that times out, and no interference with
collectives in flight.

Usage: mpiexec -n P python -m tests.workers.p2p_check   (P >= 2)
       torchrun --nproc-per-node P -m tests.workers.p2p_check
"""
from __future__ import annotations

import time

import numpy as np

import collectives
from tests.workers.common import Tally, rank_data

COUNT = 1001


def main() -> None:
    comm = collectives.init(timeout=30)
    tally = Tally(comm.rank)
    p, me = comm.size, comm.rank
    nxt, prev = (me + 1) % p, (me - 1) % p
    for dtype in collectives.DTYPES:
        sent = comm.isend(rank_data(COUNT, dtype, me), dst=nxt, tag=5)
        handle = comm.allreduce_async(np.ones(3, np.float32))  # a collective in flight
        got = comm.recv(np.empty(COUNT, dtype), src=prev, tag=5)
        sent.wait()
        tally.check(np.array_equal(got, rank_data(COUNT, dtype, prev)), f"{np.dtype(dtype)} ring")
        tally.check(bool((handle.wait() == p).all()), "the collective beside the messages")
    for bad, text in ((p, f"dst must be a rank in [0, {p})"), (-1, "dst must be a rank")):
        try:
            comm.send(np.ones(2), dst=bad)
            tally.check(False, f"dst={bad}: no error")
        except ValueError as error:
            tally.check(text in str(error), f"dst={bad}: {error}")
    if me == 0:
        comm.send(np.ones(8, np.int64), dst=1, tag=9)
        comm.send(np.ones(8, np.int64), dst=1, tag=10)
    elif me == 1:
        try:
            comm.recv(np.empty(4, np.int64), src=0, tag=9)
            tally.check(False, "a too-small receive raised nothing")
        except collectives.CollectiveError as error:
            tally.check("truncated" in str(error), f"unclear error: {error}")
        try:
            comm.recv(np.empty(16, np.int64), src=0, tag=10)
            tally.check(False, "a too-large receive raised nothing")
        except collectives.CollectiveError as error:
            tally.check("the message has 64 bytes" in str(error), f"unclear error: {error}")
    comm.barrier()
    short = collectives.init(timeout=1)
    if me == 0:  # rank 1 sends nothing: the receive gives up, naming it
        start = time.monotonic()
        try:
            short.recv(np.empty(4), src=1, tag=11)
            tally.check(False, "a receive from a silent rank returned")
        except collectives.CollectiveTimeout as error:
            tally.check("receive from rank 1 (tag 11" in str(error), f"unclear timeout: {error}")
        tally.check(time.monotonic() - start < 3, "the timed-out receive took too long")
    got = comm.allreduce(np.ones(2), op="sum")
    tally.check(bool((got == p).all()), "a collective after the timed-out receive")
    comm.barrier()
    tally.finish()


if __name__ == "__main__":
    main()
