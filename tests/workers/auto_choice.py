"""algorithm="auto" under mpiexec: correct results, and every rank runs the same choice.

Usage: mpiexec -n P python -m tests.workers.auto_choice   (COLLECTIVES_DEBUG=1 logs choices)
"""
from __future__ import annotations

import numpy as np

import collectives
from tests.workers.common import Tally, rank_data, reference, everyone


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    for count in (0, 1, 2, 1000, 1 << 16, (1 << 20) + 1):
        x = rank_data(count, np.float32, comm.rank)
        y = comm.allreduce(x, algorithm="auto")
        tally.check(np.array_equal(y, reference(count, np.float32, comm.size, "sum")),
                    f"auto count={count}: wrong values")
        choice = comm.tuner.choose(x.nbytes)
        choices = everyone(choice)
        tally.check(len(set(choices)) == 1, f"count={count}: ranks chose {choices}")
    tally.finish()


if __name__ == "__main__":
    main()
