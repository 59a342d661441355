"""A communicator made after one that gave up on a collective gets none of its messages.

Usage: mpiexec -n P python -m tests.workers.stale_messages
Rank 0 is interrupted (SIGALRM raising KeyboardInterrupt) at a random moment in a loop of
small ring all-reduces, so both ranks give up on one of them; both close; then a fresh
communicator runs the same loop uninterrupted and every result is checked. A peer's eager
send for the abandoned call stayed in MPI's queue, and the fresh communicator, which got
the freed one's context id back, took it for its call of the same number: wrong sums in
most trials, and in every communicator after (the seventieth review). Several trials,
each with its own moment, make a stale message likely. A communicator that gave up is
kept; one that closes cleanly is freed (the first fix kept every one: 681 init/close
cycles exhausted MPI's communicators, the seventy-third review).
"""
from __future__ import annotations

import random
import signal

import numpy as np
from mpi4py import MPI

import collectives
from tests.workers.common import Tally

TRIALS, CALLS = 4, 150


def interrupt(signum, frame):
    raise KeyboardInterrupt


def loop(comm, checked: Tally | None) -> None:
    """CALLS ring all-reduces of 8 float64; checked against the closed form when asked."""
    rank, size = comm.rank, comm.size
    for i in range(CALLS):
        y = comm.allreduce(np.full(8, 10.0 * i + rank + 1), algorithm="ring")
        if checked is not None:
            want = sum(10.0 * i + r + 1 for r in range(size))
            checked.check(bool((y == want).all()), f"call {i}: {y[:2]} != {want}")


def main() -> None:
    world = MPI.COMM_WORLD
    tally = Tally(world.rank)
    signal.signal(signal.SIGALRM, interrupt)
    moments = random.Random(7)
    for _ in range(TRIALS):
        comm = collectives.init(timeout=5)
        if world.rank == 0:
            signal.setitimer(signal.ITIMER_REAL, moments.uniform(0.0002, 0.006))
        try:
            loop(comm, None)
        except (KeyboardInterrupt, collectives.CollectiveError):
            pass  # the interrupt, or what it left: the communicator is unusable
        signal.setitimer(signal.ITIMER_REAL, 0)
        comm.close()
        tally.check(comm._transport.comm != MPI.COMM_NULL or comm._ctx.agreement.broken is None,
                    "a communicator that gave up was freed")
        world.Barrier()
        fresh = collectives.init(timeout=5)
        loop(fresh, tally)
        fresh.close()
        tally.check(fresh._transport.comm == MPI.COMM_NULL, "a clean close kept its communicator")
        world.Barrier()
    tally.finish()


if __name__ == "__main__":
    main()
