"""Values whose reduction order shows in the bits: +-0 and NaNs with different payloads.

Usage: mpiexec -n P python -m tests.workers.symmetric_bits
Every plan algorithm and op must still leave identical bits on every rank, and so must
`native` max and min (and `auto`, which may pick it): they run as a user op declared
non-commutative, which MPI applies in rank order (declared commutative, MPICH's order
differed between ranks: -0.0 on rank 0, +0.0 on rank 1, found by the seventh review).
`native` float sums are MPI's own MPI_SUM, whose NaN payloads differed between ranks (the
ninth review): every NaN of such a sum is made the default quiet NaN (docs/algorithms.md).
"""
from __future__ import annotations

import numpy as np

import collectives
from tests.workers.common import Tally, digest, everyone


def order_sensitive(count: int, rank: int) -> np.ndarray:
    """-0.0 on even ranks, +0.0 on odd ones, a rank-specific quiet NaN every 5th element,
    and a NaN whose sign differs between even and odd ranks every 5th from the 4th (16-bit
    payloads drop the low bits, not the sign)."""
    x = np.full(count, -0.0 if rank % 2 == 0 else 0.0, np.float32)
    bits = x.view(np.uint32)
    bits[::5] = 0x7FC00001 + rank
    bits[3::5] = 0xFFC00000 if rank % 2 else 0x7FC00000
    return x


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    names = [a for a in collectives.ALGORITHMS if a not in ("auto", "native")]
    cases = [(a, op, n) for a in names for op in ("sum", "max", "min") for n in (1, 10, 1001)]
    cases = [(a, op, n, None) for a, op, n in cases]
    cases += [(a, op, n, None) for a in ("native", "auto") for op in ("sum", "avg", "max", "min")
              for n in (1, 10, 1001, 40000)]
    # compressed, both partners of a pair reduce it too (halving_doubling): each put its
    # own operand first, and ranks held different zeros and NaNs (the sixty-eighth review)
    cases += [(a, op, n, c) for a in names for op in ("sum", "max", "min") for n in (10, 1001)
              for c in ("fp16", "bf16")]
    digests = []
    for algorithm, op, count, compression in cases:
        digests.append(digest(comm.allreduce(order_sensitive(count, comm.rank), op=op,
                                             algorithm=algorithm, compression=compression)))
    gathered = everyone(digests)
    for i, (algorithm, op, count, compression) in enumerate(cases):
        tally.check(len({d[i] for d in gathered}) == 1,
                    f"{algorithm} {op} count={count} compression={compression}: ranks hold "
                    "different bits")
    large_finite_sums_under_seterr_raise(comm, tally)
    tally.finish()


def large_finite_sums_under_seterr_raise(comm, tally) -> None:
    """The NaN probe after MPI's sum raises nothing of its own: under np.seterr(all="raise")
    a finite sum of large values (whose squares overflow) is returned (the sixteenth
    review: a FloatingPointError broke the communicator)."""
    with np.errstate(all="raise"):
        for dtype, value in ((np.float32, 1e20), (np.float64, 1e200), (np.float16, 100.0)):
            for count in (3, 1024):
                x = np.full(count, value, dtype)
                try:
                    y = comm.allreduce(x, algorithm="native")
                except Exception as error:  # noqa: BLE001 - what failed is the finding
                    tally.check(False, f"native {dtype.__name__} sum of {value:g} under "
                                       f"seterr(raise): {type(error).__name__}: {error}")
                    return
                tally.check(bool((y == dtype(value * comm.size)).all()),
                            f"native {dtype.__name__} sum of {value:g}: {y[:3]}")


if __name__ == "__main__":
    main()
