"""avg of float16 whose sum overflows but whose mean fits: finite and close to the mean on
every path, the same bits on every rank.

Usage: mpiexec -n P python -m tests.workers.half_mean
x near 60000 on every rank (float16's top is 65504). Every algorithm, `auto` small
(riding) and large, the second call of a shape (the small-call lane), in place, fused
lists, reduce and reduce_scatter. The plans and MPI summed in float16 and divided after:
inf (found by the seventh review). (bfloat16 has float32's range: where its sum
overflows, float32's accumulator does too.)
"""
from __future__ import annotations

import numpy as np

import collectives
from tests.workers.common import Tally, digest, everyone

TOP = 60000.0
ALGORITHMS = ("auto", "native", "ring", "hierarchical", "torus2d", "halving_doubling")


def rank_values(count: int, rank: int) -> np.ndarray:
    return (np.linspace(0.9, 1.0, count) * TOP * (1 - 0.01 * rank)).astype(np.float16)


def check(tally: Tally, label: str, got, want: np.ndarray) -> None:
    close = np.isfinite(got.astype(np.float64)).all() and np.allclose(
        got.astype(np.float64), want, rtol=2.0 ** -6, atol=0)
    tally.check(bool(close), f"{label}: {got.ravel()[:3]} against {want.ravel()[:3]}")
    tally.check(len(set(everyone(digest(got)))) == 1, f"{label}: bits differ across ranks")


def main() -> None:
    comm = collectives.init(timeout=60)
    tally = Tally(comm.rank)
    p, rank = comm.size, comm.rank
    for count in (3, 5000):
        want = np.mean([rank_values(count, r).astype(np.float64) for r in range(p)], axis=0)
        x = rank_values(count, rank)
        for algorithm in ALGORITHMS:
            label = f"n={count} {algorithm}"
            for turn in range(2):  # the second through the small-call lane
                check(tally, f"{label} turn {turn}",
                      comm.allreduce(x, op="avg", algorithm=algorithm), want)
            check(tally, f"{label} out",
                  comm.allreduce(x, op="avg", algorithm=algorithm, out=np.empty_like(x)),
                  want)
            inplace = x.copy()
            check(tally, f"{label} in place",
                  comm.allreduce(inplace, op="avg", algorithm=algorithm, out=inplace), want)
            fused = comm.allreduce_many([x, x[:2]], op="avg", algorithm=algorithm)
            check(tally, f"{label} fused", fused[0], want)
            check(tally, f"{label} fused [:2]", fused[1], want[:2])
            got = comm.reduce(x, root=p - 1, op="avg", algorithm=algorithm)
            if rank == p - 1:
                tally.check(np.isfinite(got.astype(np.float64)).all()
                            and np.allclose(got.astype(np.float64), want, rtol=2.0 ** -6),
                            f"{label} reduce: {got[:3]}")
            block = comm.reduce_scatter(x, op="avg", algorithm=algorithm)
            lo = sum(b.size for b in np.array_split(want, p)[:rank])
            tally.check(np.isfinite(block.astype(np.float64)).all() and np.allclose(
                block.astype(np.float64), want[lo: lo + block.size], rtol=2.0 ** -6),
                f"{label} reduce_scatter: {block[:3]}")
    tally.finish()


if __name__ == "__main__":
    main()
