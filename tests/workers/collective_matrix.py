"""Every collective x algorithm x dtype x op x awkward size x root x layout, checked against
NumPy's closed form.

Usage: mpiexec -n P python -m tests.workers.collective_matrix COLL[,COLL...] [--large]
           [--dtypes all|few]
COLL among reduce_scatter, allgather, broadcast, reduce, alltoall. Checks values, shape,
dtype and array type, that x is untouched (unless out is x), and bits: every rank holds the
same allgather and broadcast result (their digests, exchanged once at the end: one exchange
per case made most of the run at 8 ranks on 2 cores), and each rank's reduce-scatter block
is its block of the reference reduction.
"""
from __future__ import annotations

import argparse

import numpy as np

import collectives
from collectives.algorithms import PLANNERS
from tests.workers.common import OPS, Tally, digest, everyone, rank_data, reference

LAYOUTS = ("contiguous", "strided", "out")


def sizes(p: int, large: bool) -> list[int]:
    return sorted({0, 1, max(p - 1, 1), p, 7, 1009, 3 * p + 1}) + ([(1 << 18) + 3] if large else [])


def strided(x: np.ndarray) -> np.ndarray:
    spaced = np.zeros((2 * x.size,), x.dtype)
    spaced[::2] = x.reshape(-1)
    return spaced[::2].reshape(x.shape) if x.ndim == 1 else spaced[::2].reshape(x.shape)


def present(x: np.ndarray, layout: str) -> np.ndarray:
    return strided(x) if layout == "strided" and x.ndim == 1 else x


def check_reduce_scatter(comm, tally, algorithm, dtype, count, op, layout) -> None:
    """Layouts "own-block" and "last-block": out is a view of x's block of this rank
    (NCCL's in-place reduce-scatter) or of its last block, read while the block is
    written (a result written during the plan was wrong there)."""
    x = present(rank_data(count, dtype, comm.rank), layout)
    want = np.array_split(reference(count, dtype, comm.size, op), comm.size)[comm.rank]
    out = np.full(want.shape, 99, dtype) if layout == "out" else None
    if layout in ("own-block", "last-block"):
        lo = sum(b.size for b in np.array_split(x, comm.size)[:comm.rank])
        at = lo if layout == "own-block" else x.size - want.size
        out = x[at: at + want.size]
    before = digest(x)
    y = comm.reduce_scatter(x, op=op, algorithm=algorithm, out=out)
    case = f"reduce_scatter {algorithm} {np.dtype(dtype)} count={count} op={op} {layout}"
    tally.check(out is None or y is out, f"{case}: result is not out")
    tally.check(layout.endswith("block") or digest(x) == before, f"{case}: input modified")
    tally.check(y.shape == want.shape and y.dtype == want.dtype and np.array_equal(y, want),
                lambda: f"{case}: got {y[:4]} ({y.shape}) expected {want[:4]} ({want.shape})")


def check_allgather(comm, tally, algorithm, dtype, count, op, layout) -> tuple[str, str]:
    """Layouts "own-row" and "other-row": x is a view of out's row of this rank (FSDP's
    in-place gather) or of the next rank's, which the gather overwrites (x must be read
    before: sent from where it lay, it was overwritten in flight)."""
    x = present(rank_data(count, dtype, comm.rank), layout)
    want = np.stack([rank_data(count, dtype, r) for r in range(comm.size)])
    out = np.full(want.shape, 99, dtype) if layout in ("out", "own-row", "other-row") else None
    if layout in ("own-row", "other-row"):
        row = comm.rank if layout == "own-row" else (comm.rank + 1) % comm.size
        out[row] = x
        x = out[row]
    before = digest(x)
    y = comm.allgather(x, algorithm=algorithm, out=out)
    case = f"allgather {algorithm} {np.dtype(dtype)} count={count} {layout}"
    tally.check(out is None or y is out, f"{case}: result is not out")
    tally.check(layout == "other-row" or digest(x) == before, f"{case}: input modified")
    tally.check(y.shape == want.shape and y.dtype == want.dtype and np.array_equal(y, want),
                f"{case}: rows differ")
    return case, digest(y)


def check_broadcast(comm, tally, algorithm, dtype, count, root, layout) -> tuple[str, str]:
    """Layout "inplace-strided": out is x, a strided view, twice with other data (root's x
    went unread: the library's buffer was sent, whatever an earlier call left in it, and
    written over root's x; the fifty-second review)."""
    if layout == "inplace-strided":
        for shift in (0, 1):
            x = strided(rank_data(count, dtype, comm.rank + shift))
            want = rank_data(count, dtype, root + shift)
            y = comm.broadcast(x, root=root, algorithm=algorithm, out=x)
            case = f"broadcast {algorithm} {np.dtype(dtype)} count={count} root={root} {layout}"
            tally.check(y is x and np.array_equal(y, want),
                        lambda: f"{case} #{shift}: got {y[:4]}")
        return case, digest(y)
    x = present(rank_data(count, dtype, comm.rank), layout)
    before = digest(x)
    want = rank_data(count, dtype, root)
    if layout == "inplace":
        y = comm.broadcast(x, root=root, algorithm=algorithm, out=x)
        tally.check(y is x, "in-place broadcast did not return x")
    else:
        out = np.full(want.shape, 99, dtype) if layout == "out" else None
        y = comm.broadcast(x, root=root, algorithm=algorithm, out=out)
        tally.check(digest(x) == before, f"broadcast {algorithm}: input modified")
    case = f"broadcast {algorithm} {np.dtype(dtype)} count={count} root={root} {layout}"
    tally.check(y.dtype == want.dtype and np.array_equal(y, want), lambda: f"{case}: got {y[:4]}")
    return case, digest(y)


def check_reduce(comm, tally, algorithm, dtype, count, op, root, layout) -> None:
    x = present(rank_data(count, dtype, comm.rank), layout)
    before = digest(x)
    want = reference(count, dtype, comm.size, op)
    out = np.full(want.shape, 99, dtype) if layout == "out" and comm.rank == root else None
    y = comm.reduce(x, root=root, op=op, algorithm=algorithm, out=out)
    case = f"reduce {algorithm} {np.dtype(dtype)} count={count} op={op} root={root} {layout}"
    tally.check(digest(x) == before, f"{case}: input modified")
    if comm.rank != root:
        tally.check(y is None, f"{case}: a rank other than root got {type(y).__name__}")
    else:
        tally.check(out is None or y is out, f"{case}: result is not out")
        tally.check(y.dtype == want.dtype and np.array_equal(y, want),
                    lambda: f"{case}: got {y[:4]}")


def check_alltoall(comm, tally, algorithm, dtype, count, layout) -> None:
    p, me = comm.size, comm.rank
    m = max(count // p, 0)
    x = rank_data(p * m, dtype, me).reshape(p, m)
    if layout == "inplace":
        x = x.copy()
    before = digest(x)
    want = np.stack([rank_data(p * m, dtype, q).reshape(p, m)[me] for q in range(p)])
    case = f"alltoall {algorithm} {np.dtype(dtype)} rows of {m} {layout}"
    if layout == "inplace":
        y = comm.alltoall(x, out=x, algorithm=algorithm)
        tally.check(y is x, f"{case}: result is not x")
    else:
        out = np.full(want.shape, 99, dtype) if layout == "out" else None
        y = comm.alltoall(x, out=out, algorithm=algorithm)
        tally.check(digest(x) == before, f"{case}: input modified")
    tally.check(y.shape == want.shape and np.array_equal(y, want), f"{case}: rows differ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("collectives", type=lambda s: s.split(","))
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--dtypes", choices=("all", "few"), default="all")
    args = parser.parse_args()
    comm = collectives.init()
    tally = Tally(comm.rank)
    p = comm.size
    roots = sorted({0, p - 1, p // 2})
    dtypes = collectives.DTYPES if args.dtypes == "all" else (np.float32, np.int64)
    digests = []  # (case, digest) of every allgather and broadcast, in call order
    for name in args.collectives:
        for algorithm in ("auto", "native", *PLANNERS[name]):
            for dtype in dtypes:
                for count in sizes(p, args.large):
                    layouts = LAYOUTS if count < 1 << 16 else ("contiguous",)
                    for layout in layouts:
                        if name == "reduce_scatter":
                            for op in OPS:
                                for lay in ((layout, "own-block", "last-block")
                                            if layout == "out" else (layout,)):
                                    check_reduce_scatter(comm, tally, algorithm, dtype, count,
                                                         op, lay)
                        elif name == "allgather":
                            for lay in ((layout, "own-row", "other-row") if layout == "out"
                                        else (layout,)):
                                digests.append(check_allgather(comm, tally, algorithm, dtype,
                                                               count, None, lay))
                        elif name == "broadcast":
                            for root in roots:
                                for lay in ((layout, "inplace") if layout == "out" else
                                            (layout, "inplace-strided") if layout == "strided"
                                            else (layout,)):
                                    digests.append(check_broadcast(comm, tally, algorithm, dtype,
                                                                   count, root, lay))
                        elif name == "reduce":
                            for op in OPS:
                                for root in roots:
                                    check_reduce(comm, tally, algorithm, dtype, count, op, root,
                                                 layout)
                        elif name == "alltoall" and layout != "strided":
                            for lay in (layout, "inplace") if layout == "out" else (layout,):
                                check_alltoall(comm, tally, algorithm, dtype, count, lay)
    if args.large and "reduce_scatter" in args.collectives:  # blocks of several segments
        for layout in ("own-block", "last-block"):
            check_reduce_scatter(comm, tally, "ring", np.float64, p * (1 << 18) + 5, "sum",
                                 layout)
    for row in zip(*everyone(digests)):  # (ranks make the same cases: rows line up)
        tally.check(len({d for _, d in row}) == 1, f"{row[0][0]}: ranks differ in bits")
    tally.finish()


if __name__ == "__main__":
    main()
