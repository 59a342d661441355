"""Every algorithm x dtype x op x awkward size x layout against the NumPy reference.

Usage: mpiexec -n P python -m tests.workers.allreduce_matrix ALG[,ALG...] [--large]
Checks values, shape, dtype, that x is untouched, and identical bits on every rank.
"""
from __future__ import annotations

import sys

import numpy as np

import collectives
from tests.workers.common import OPS, Tally, digest, rank_data, reference

LAYOUTS = ("contiguous", "fortran", "strided", "out", "inplace")


def make_input(count: int, dtype, rank: int, layout: str) -> np.ndarray:
    """rank_data(count) presented in `layout` (values in C order are rank_data)."""
    flat = rank_data(count, dtype, rank)
    if layout == "fortran" and count % 2 == 0 and count >= 2:
        return np.asfortranarray(flat.reshape(2, count // 2))
    if layout == "strided":
        spaced = np.zeros(2 * count, dtype)
        spaced[::2] = flat
        return spaced[::2]
    return flat


def sizes(p: int, large: bool) -> list[int]:
    base = sorted({0, 1, max(p - 1, 1), p, 7, 1009, 3 * p + 1})
    return base + ([(1 << 18) + 3] if large else [])


def main() -> None:
    algorithms = sys.argv[1].split(",")
    large = "--large" in sys.argv
    comm = collectives.init()
    tally = Tally(comm.rank)
    for algorithm in algorithms:
        for dtype in collectives.DTYPES:
            for count in sizes(comm.size, large):
                for op in OPS:
                    layouts = LAYOUTS if count < 1 << 16 else ("contiguous",)
                    for layout in layouts:
                        case = f"{algorithm} {dtype} count={count} op={op} layout={layout}"
                        x = make_input(count, dtype, comm.rank, layout)
                        before = x.copy()
                        if layout == "out":
                            out = np.full(x.shape, 99, dtype)
                            y = comm.allreduce(x, op=op, algorithm=algorithm, out=out)
                            tally.check(y is out, f"{case}: result is not out")
                        elif layout == "inplace":
                            y = comm.allreduce(x, op=op, algorithm=algorithm, out=x)
                            tally.check(y is x, f"{case}: result is not x")
                        else:
                            y = comm.allreduce(x, op=op, algorithm=algorithm)
                            tally.check(np.array_equal(x, before), f"{case}: input modified")
                        expected = reference(count, dtype, comm.size, op).reshape(-1)
                        got = y.reshape(-1)
                        tally.check(y.shape == x.shape and y.dtype == x.dtype,
                                    f"{case}: got shape {y.shape} dtype {y.dtype}")
                        tally.check(np.array_equal(got, expected),
                                    f"{case}: values differ, first {got[:4]} vs {expected[:4]}")
                        digests = comm._transport.allgather_object(digest(y))
                        tally.check(len(set(digests)) == 1, f"{case}: ranks differ in bits")
    tally.finish()


if __name__ == "__main__":
    main()
