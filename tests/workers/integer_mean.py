"""avg of integers is floor(sum / p) of the exact sum, whatever the sum's size.

Usage: mpiexec -n P python -m tests.workers.integer_mean ALG[,ALG...]
Values near the dtype's limits on every rank: the sum overflows int32/int64, the average
does not. Checked against Python's integers, in rank order, for every algorithm, small
(riding with the records) and large counts, single arrays and fused lists.
"""
from __future__ import annotations

import logging
import sys

import numpy as np

import collectives
from tests.workers.common import Tally, digest, everyone

COUNTS = (1, 7, 100, 5000)


def values(dtype, count: int, rank: int) -> np.ndarray:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1000 + rank)
    x = rng.integers(info.max // 2, info.max, size=count, dtype=dtype, endpoint=True)
    x[1::3] = rng.integers(info.min, info.min // 2, size=x[1::3].size, dtype=dtype)
    x[2::5] = info.max if rank % 2 else info.min
    return x


def exact_mean(dtype, count: int, size: int) -> list[int]:
    columns = [values(dtype, count, r).tolist() for r in range(size)]
    return [sum(col) // size for col in zip(*columns)]


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    for algorithm in sys.argv[1].split(","):
        for dtype in (np.int32, np.int64):
            for count in COUNTS:
                x = values(dtype, count, comm.rank)
                want = exact_mean(dtype, count, comm.size)
                case = f"{algorithm} {np.dtype(dtype)} count={count}"
                y = comm.allreduce(x, op="avg", algorithm=algorithm)
                tally.check(y.dtype == dtype and y.tolist() == want, f"{case}: {y[:3]} vs {want[:3]}")
                ys = comm.allreduce_many([x, x[: count // 2 + 1]], op="avg", algorithm=algorithm)
                tally.check(ys[0].tolist() == want and ys[1].tolist() == want[: count // 2 + 1],
                            f"{case} fused")
                tally.check(len(set(everyone(digest(y)))) == 1, f"{case}: ranks differ")
    check_auto_logs_what_runs(comm, tally)
    tally.finish()


def check_auto_logs_what_runs(comm, tally) -> None:
    """An integer avg by reduce or reduce_scatter is an all-reduce, with the all-reduce's
    own auto: the tuner also priced and logged a reduce plan that never ran (the 103rd
    review). Run with COLLECTIVES_DEBUG=1 (the tuner logs only then)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("collectives.tuner")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        x = values(np.int32, 3001, comm.rank)
        comm.reduce(x, op="avg", root=comm.size - 1)
        comm.reduce_scatter(x, op="avg")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    said = [record.getMessage() for record in records]
    tally.check(not any(m.startswith(("auto: reduce of", "auto: reduce_scatter of")) for m in said),
                lambda: f"auto logged a choice that did not run: {said}")
    for name, call in (("reduce", lambda: comm.reduce(x, op="avg", algorithm="native")),
                       ("reduce_scatter", lambda: comm.reduce_scatter(x, op="avg",
                                                                      algorithm="native"))):
        comm.reset_stats()  # (a record of MPI's own reduce too, bytes counted twice: 105th)
        call()
        tally.check(list(comm.stats()) == ["native"], f"native {name} recorded {comm.stats()}")


if __name__ == "__main__":
    main()
