"""fp16/bf16 wire compression on reduce_scatter, allgather and reduce: every plan and auto.

Usage: mpiexec -n P python -m tests.workers.compressed_collectives
Relative error (2-norm) vs float64 within 2e-3 (fp16) and 2e-2 (bf16); 60000.0 on every rank
stays finite, and so do float64 values far beyond 16 bits' and float32's range (1e50,
1e300 / p: the scale reaches float64's range); results keep the input's dtype; allgather
rows hold the same bits on every rank;
`algorithm="auto"` with a compression runs a compressed plan (never MPI's own, which has no
codec), and naming "native" with a compression is refused on every rank.
"""
from __future__ import annotations

import numpy as np

import collectives
from collectives.algorithms import PLANNERS
from tests.workers.common import Tally, digest, everyone
from tests.workers.compression_check import BOUND, normal, relative_error

COUNT = 10007  # odd: uneven blocks and segments


def blocks(size: int) -> list[tuple[int, int]]:
    edges = np.cumsum([0] + [len(b) for b in np.array_split(np.arange(COUNT), size)])
    return list(zip(edges[:-1], edges[1:]))


def check_reduce_scatter(comm, tally, algorithm, compression, dtype, op) -> None:
    case = f"reduce_scatter {algorithm} {compression} {np.dtype(dtype)} {op}"
    x = normal(comm.rank, COUNT).astype(dtype)
    y = comm.reduce_scatter(x, op=op, algorithm=algorithm, compression=compression)
    stack = np.stack([normal(r, COUNT).astype(dtype).astype(np.float64) for r in range(comm.size)])
    want = stack.sum(axis=0) / (comm.size if op == "avg" else 1)
    lo, hi = blocks(comm.size)[comm.rank]
    tally.check(y.dtype == np.dtype(dtype), f"{case}: dtype {y.dtype}")
    tally.check(relative_error(y, want[lo:hi]) <= BOUND[compression],
                f"{case}: relative error {relative_error(y, want[lo:hi]):.2e}")


def check_reduce(comm, tally, algorithm, compression, root) -> None:
    case = f"reduce {algorithm} {compression} root {root}"
    x = normal(comm.rank, COUNT, seed=1).astype(np.float32)
    y = comm.reduce(x, root=root, algorithm=algorithm, compression=compression)
    if comm.rank != root:
        tally.check(y is None, f"{case}: non-root got {type(y).__name__}")
        return
    want = sum(normal(r, COUNT, seed=1).astype(np.float32).astype(np.float64)
               for r in range(comm.size))
    tally.check(relative_error(y, want) <= BOUND[compression],
                f"{case}: relative error {relative_error(y, want):.2e}")


def check_allgather(comm, tally, algorithm, compression) -> None:
    case = f"allgather {algorithm} {compression}"
    x = normal(comm.rank, COUNT, seed=2).astype(np.float32)
    y = comm.allgather(x, algorithm=algorithm, compression=compression)
    for r in range(comm.size):
        want = normal(r, COUNT, seed=2).astype(np.float32)
        tally.check(relative_error(y[r], want) <= BOUND[compression],
                    f"{case}: row {r} relative error {relative_error(y[r], want):.2e}")
    digests = everyone(digest(y))
    tally.check(len(set(digests)) == 1, f"{case}: ranks differ in bits")


def check_overflow(comm, tally, algorithm, compression) -> None:
    """60000.0 on every rank, near fp16's max: p * 60000 must come out finite and right."""
    x = np.full(COUNT, 60000.0, np.float32)
    y = comm.reduce_scatter(x, algorithm=algorithm, compression=compression)
    want = 60000.0 * comm.size
    tally.check(bool(np.isfinite(y).all()) and
                bool((np.abs(y - want) <= want * BOUND[compression]).all()),
                f"reduce_scatter {algorithm} {compression} 60000: {y[:3]}")


def check_float64_range(comm, tally, compression) -> None:
    """float64 data of magnitude 1e50, 1e300 / p and 1e-300 (below every 16-bit range: it
    came back as zeros): every collective with a compression, deterministic and with error
    feedback too, finite and within the bound."""
    p, rank = comm.size, comm.rank
    for magnitude in (1e50, 1e300 / p, 1e-300):
        x = normal(rank, COUNT, seed=3) * magnitude
        want = sum(normal(r, COUNT, seed=3) * magnitude for r in range(p))
        lo, hi = blocks(p)[rank]
        results = {
            "allreduce": (comm.allreduce(x, compression=compression), want),
            "allreduce feedback": (comm.allreduce(x, compression=compression,
                                                  error_feedback=f"range {magnitude}"), want),
            "allreduce deterministic": (comm.allreduce(x, compression=compression,
                                                       deterministic=True), want),
            "reduce_scatter": (comm.reduce_scatter(x, compression=compression), want[lo:hi]),
            "reduce_scatter deterministic": (comm.reduce_scatter(
                x, compression=compression, deterministic=True), want[lo:hi]),
            "allgather": (comm.allgather(x, compression=compression)[rank], x),
        }
        y = comm.reduce(x, root=0, op="avg", compression=compression)
        if rank == 0:
            results["reduce avg"] = (y, want / p)
        for name, (got, expected) in results.items():
            case = f"{name} {compression} float64 x {magnitude:.0e}"
            error = relative_error(got / magnitude, expected / magnitude)  # norms overflow
            tally.check(bool(np.isfinite(got).all()) and error <= BOUND[compression],
                        f"{case}: relative error {error:.2e}: {got[:2]} vs {expected[:2]}")
    comm.clear_error_feedback()


def check_dtype_top(comm, tally, compression) -> None:
    """x at the largest finite value of its dtype: the 16-bit rounding pushed results a few
    ulps past it, to inf (bfloat16(65504) is 65536), in every collective. They stay finite,
    within the wire's rounding; a sum that truly overflows the dtype stays inf."""
    p, rank = comm.size, comm.rank
    for dtype in (np.float16, np.float32):
        top = float(np.finfo(dtype).max)
        for sign in (1.0, -1.0):
            x = np.full(5, sign * top, dtype)
            results = {
                "allreduce avg": comm.allreduce(x, op="avg", compression=compression),
                "allreduce avg ring": comm.allreduce(x, op="avg", compression=compression,
                                                     algorithm="ring"),
                "allreduce max": comm.allreduce(x, op="max", compression=compression),
                "allreduce avg deterministic": comm.allreduce(
                    x, op="avg", compression=compression, deterministic=True),
                "reduce_scatter avg": comm.reduce_scatter(x, op="avg", compression=compression),
                "allgather": comm.allgather(x, compression=compression)[rank],
            }
            # into out=: the result was clamped against float32's top, then cast to inf
            into, in_place, beside = np.empty_like(x), x.copy(), np.ones(3, np.float32)
            comm.allreduce(x, op="avg", compression=compression, out=into)
            comm.allreduce(in_place, op="max", compression=compression, out=in_place)
            comm.allreduce_many([in_place, beside], op="avg", compression=compression,
                                out=[in_place, beside], algorithm="ring")
            results.update({"allreduce avg out=": into, "allreduce max in place": in_place,
                            "allreduce_many avg in place": in_place})
            y = comm.reduce(x, root=0, op="min", compression=compression)
            if rank == 0:
                results["reduce min"] = y
            for name, got in results.items():
                case = f"{name} {compression} {np.dtype(dtype)} at {sign * top:.4g}"
                close = np.abs(got.astype(np.float64) - sign * top) <= top * 2.0 ** -7
                tally.check(bool(np.isfinite(got).all() and close.all()), f"{case}: {got}")
    if p > 1:  # 0.75 of float16's top on every rank: the sum truly overflows
        x = np.full(3, 0.75 * float(np.finfo(np.float16).max), np.float16)
        got = comm.allreduce(x, compression=compression)
        tally.check(bool(np.isposinf(got).all()), f"{compression} float16 sum overflow: {got}")


def check_auto_compresses(comm, tally, compression) -> None:
    """auto with a compression prices the plans only: the call is a compressed plan, also
    of 0 elements (recorded as MPI's own: the eighty-eighth review)."""
    for name, call in (("reduce_scatter", lambda x: comm.reduce_scatter(
                           x, compression=compression)),
                       ("allgather", lambda x: comm.allgather(x, compression=compression)),
                       ("reduce", lambda x: comm.reduce(x, compression=compression)),
                       ("allreduce", lambda x: comm.allreduce(x, compression=compression))):
        for count in (1 << 16, 0):
            comm.reset_stats()
            call(normal(comm.rank, count).astype(np.float32))
            labels = [label for label in comm.stats() if label != "scale-agreement"]
            tally.check(bool(labels) and all("native" not in label and label.endswith(
                f"+{compression}") for label in labels),
                f"auto {name} {compression} of {count} ran {labels}")


def check_native_refused(comm, tally) -> None:
    for name, call in (("reduce_scatter", comm.reduce_scatter), ("reduce", comm.reduce)):
        try:
            call(np.ones(8, np.float32), algorithm="native", compression="fp16")
        except ValueError as caught:
            tally.check("codec" in str(caught) and name in str(caught), f"{name}: {caught}")
        else:
            tally.check(False, f"{name} native+fp16: no ValueError")


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    for compression in ("fp16", "bf16"):
        for algorithm in ("auto", *PLANNERS["reduce_scatter"]):
            for dtype in (np.float32, np.float64):
                for op in ("sum", "avg"):
                    check_reduce_scatter(comm, tally, algorithm, compression, dtype, op)
            check_overflow(comm, tally, algorithm, compression)
        for algorithm in ("auto", *PLANNERS["allgather"]):
            check_allgather(comm, tally, algorithm, compression)
        for algorithm in ("auto", *PLANNERS["reduce"]):
            check_reduce(comm, tally, algorithm, compression, root=comm.size - 1)
        check_auto_compresses(comm, tally, compression)
        check_float64_range(comm, tally, compression)
        check_dtype_top(comm, tally, compression)
    check_native_refused(comm, tally)
    tally.finish()


if __name__ == "__main__":
    main()
