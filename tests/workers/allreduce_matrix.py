"""Every algorithm x dtype x op x awkward size x layout against the NumPy reference.

Usage: mpiexec -n P python -m tests.workers.allreduce_matrix ALG[,ALG...] [--large]
           [--medium] [--layouts L[,L...]] [--expect-grid XxY] [--expect-nodes K[,K...]]
Checks values, shape, dtype, that x is untouched, and identical bits on every rank.
--medium adds a size that straddles halving-doubling's recursive-doubling threshold across
dtypes; --expect-* check the topology that init() built (from COLLECTIVES_LOCAL_SIZE,
COLLECTIVES_GRID) before any all-reduce.
"""
from __future__ import annotations

import argparse

import numpy as np

import collectives
import kernels
from tests.workers.common import OPS, Tally, digest, rank_data, reference, everyone

LAYOUTS = ("contiguous", "fortran", "strided", "out", "inplace")
MEDIUM = 5003  # 10 KB in 16-bit floats, 20 to 40 KB in 4- and 8-byte types


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


def sizes(p: int, large: bool, medium: bool = False) -> list[int]:
    base = sorted({0, 1, max(p - 1, 1), p, 7, 1009, 3 * p + 1})
    return base + ([MEDIUM] if medium else []) + ([(1 << 18) + 3] if large else [])


def check_case(comm, tally: Tally, algorithm: str, dtype, count: int, op: str, layout: str, *,
               to_array=lambda x: x, to_host=lambda y: y) -> tuple[str, str]:
    """One all-reduce of rank_data in `layout`, checked; returns (case, digest of the result).

    `to_array` moves the NumPy input to the array type under test (e.g. onto a GPU) and
    `to_host` brings an array of that type back as NumPy.
    """
    case = f"{algorithm} {dtype} count={count} op={op} layout={layout}"
    x = to_array(make_input(count, dtype, comm.rank, layout))
    before = digest(to_host(x))
    if layout == "out":
        out = kernels.array_module(x).full(x.shape, 99, dtype)
        y = comm.allreduce(x, op=op, algorithm=algorithm, out=out)
        tally.check(y is out, f"{case}: result is not out")
    elif layout == "inplace":
        y = comm.allreduce(x, op=op, algorithm=algorithm, out=x)
        tally.check(y is x, f"{case}: result is not x")
    else:
        y = comm.allreduce(x, op=op, algorithm=algorithm)
        tally.check(digest(to_host(x)) == before, f"{case}: input modified")
    tally.check(type(y) is type(x), f"{case}: got a {type(y).__name__}, x is a {type(x).__name__}")
    tally.check(y.shape == x.shape and y.dtype == x.dtype,
                f"{case}: got shape {y.shape} dtype {y.dtype}")
    got = to_host(y).reshape(-1)
    expected = reference(count, dtype, comm.size, op).reshape(-1)
    tally.check(np.array_equal(got, expected),
                f"{case}: values differ, first {got[:4]} vs {expected[:4]}")
    return case, digest(got)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("algorithms", type=lambda s: s.split(","))
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--medium", action="store_true")
    parser.add_argument("--layouts", type=lambda s: tuple(s.split(",")), default=LAYOUTS)
    parser.add_argument("--expect-grid", type=lambda s: tuple(int(v) for v in s.split("x")))
    parser.add_argument("--expect-nodes", type=lambda s: [int(v) for v in s.split(",")])
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    comm = collectives.init()
    tally = Tally(comm.rank)
    nodes = [len(node) for node in comm.topology.nodes]
    if args.expect_nodes is not None:
        tally.check(nodes == args.expect_nodes, f"node sizes {nodes}, expected {args.expect_nodes}")
    if args.expect_grid is not None:
        grid = comm.topology.grid_shape()
        tally.check(grid == args.expect_grid, f"grid {grid}, expected {args.expect_grid}")
    digests: list[tuple[str, str]] = []
    for algorithm in args.algorithms:
        for dtype in collectives.DTYPES:
            for count in sizes(comm.size, args.large, args.medium):
                for op in OPS:
                    layouts = args.layouts if count < 1 << 16 else ("contiguous",)
                    for layout in layouts:
                        digests.append(check_case(comm, tally, algorithm, dtype, count, op, layout))
    # one exchange of every case's digest: ranks agree on the cases, so rows line up
    for row in zip(*everyone(digests)):
        tally.check(len({d for _, d in row}) == 1, f"{row[0][0]}: ranks differ in bits")
    tally.finish()


if __name__ == "__main__":
    main()
