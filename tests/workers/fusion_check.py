"""allreduce_many against the closed form and against one allreduce per array.

Usage: mpiexec -n P python -m tests.workers.fusion_check ALG[,ALG...]
       mpiexec -n P python -m tests.workers.fusion_check --env-fusion-bytes N
Mixed shapes (0-d, empty, odd), dtypes (all six) and layouts (C, Fortran, strided); fusion
buffers from one per array to one for all; new results, out= lists and in place. Checks
values, shapes, dtypes, untouched inputs, bits equal to the per-array results and across
ranks, the number of all-reduces run, and the errors of bad arguments.
"""
from __future__ import annotations

import re
import sys

import numpy as np

import collectives
from tests.workers.common import OPS, Tally, digest, everyone

SHAPES = [((), "C"), ((0,), "C"), ((1,), "C"), ((3, 5), "C"), ((4, 6), "F"), ((1009,), "C"),
          ((2, 3, 4), "C"), ((300,), "strided"), ((7, 1), "C"), ((4096,), "C"), ((2,), "C")]
FUSION_BYTES = (64 << 20, 512, 1)


def values(i: int, count: int, dtype, rank: int) -> np.ndarray:
    """Small integers, exact in every dtype when summed over <= 8 ranks; differ per array."""
    v = (np.arange(count, dtype=np.int64) * 7 + rank * 3 + i * 5) % 9 - 4
    return v.astype(dtype)


def make(i: int, rank: int) -> np.ndarray:
    dtype = collectives.DTYPES[i % len(collectives.DTYPES)]
    shape, layout = SHAPES[i % len(SHAPES)]
    flat = values(i, int(np.prod(shape)), dtype, rank)
    if layout == "F":
        return np.asfortranarray(flat.reshape(shape))
    if layout == "strided":
        spaced = np.zeros(2 * flat.size, dtype)
        spaced[::2] = flat
        return spaced[::2].reshape(shape)
    return flat.reshape(shape)


def expected(i: int, x: np.ndarray, size: int, op: str) -> np.ndarray:
    stack = np.stack([values(i, x.size, np.float64, r) for r in range(size)])
    if op in ("sum", "avg"):
        total = stack.sum(axis=0)
        if op == "avg":
            total = total // size if x.dtype.kind == "i" else total / size
    else:
        total = stack.max(axis=0) if op == "max" else stack.min(axis=0)
    return total.astype(x.dtype).reshape(x.shape)


def check_results(tally, comm, case, xs, ys, op) -> None:
    tally.check(len(ys) == len(xs), f"{case}: {len(ys)} results for {len(xs)} arrays")
    for i, (x, y) in enumerate(zip(xs, ys)):
        ok = y.shape == x.shape and y.dtype == x.dtype
        tally.check(ok, f"{case} #{i}: got shape {y.shape} dtype {y.dtype}, want {x.shape} {x.dtype}")
        if ok:
            want = expected(i, x, comm.size, op)
            tally.check(np.array_equal(y, want), f"{case} #{i} {x.dtype}{x.shape}: values differ")
    digests = everyone([digest(y) for y in ys])
    tally.check(all(d == digests[0] for d in digests), f"{case}: ranks differ in bits")


def matrix(comm, tally, algorithms) -> None:
    xs = [make(i, comm.rank) for i in range(2 * len(SHAPES))]
    before = [x.copy() for x in xs]
    for algorithm in algorithms:
        for op in OPS:
            single = [comm.allreduce(x, op=op, algorithm=algorithm) for x in xs]
            for fusion_bytes in FUSION_BYTES:
                case = f"{algorithm} op={op} fusion_bytes={fusion_bytes}"
                ys = comm.allreduce_many(xs, op=op, algorithm=algorithm, fusion_bytes=fusion_bytes)
                check_results(tally, comm, case, xs, ys, op)
                same = all(digest(y) == digest(s) for y, s in zip(ys, single))
                tally.check(same, f"{case}: fused bits differ from one allreduce per array")
                tally.check(all(np.array_equal(x, b) for x, b in zip(xs, before)),
                            f"{case}: an input was modified")
            outs = [np.full(x.shape, 99, x.dtype) for x in xs]
            ys = comm.allreduce_many(xs, op=op, algorithm=algorithm, fusion_bytes=512, out=outs)
            tally.check(all(y is o for y, o in zip(ys, outs)), f"{algorithm} {op}: out= not returned")
            check_results(tally, comm, f"{algorithm} op={op} out=", xs, ys, op)
            inplace = [x.copy(order="K") for x in xs]
            ys = comm.allreduce_many(inplace, op=op, algorithm=algorithm, out=inplace)
            check_results(tally, comm, f"{algorithm} op={op} in place", xs, ys, op)


def bucket_counts(comm, tally, fusion_bytes: int | None) -> None:
    """10 float32 arrays of 1000 elements in 8000-byte buffers: 5 all-reduces."""
    xs = [np.full(1000, comm.rank + i, np.float32) for i in range(10)]
    comm.reset_stats()
    ys = comm.allreduce_many(xs, op="sum", algorithm="ring", fusion_bytes=fusion_bytes)
    calls = comm.stats()["ring"].calls
    tally.check(calls == 5, f"fusion_bytes={fusion_bytes}: {calls} all-reduces, want 5")
    want = [np.full(1000, sum(range(comm.size)) + comm.size * i, np.float32) for i in range(10)]
    tally.check(all(np.array_equal(y, w) for y, w in zip(ys, want)), "bucketed values differ")


def errors(comm, tally) -> None:
    x = np.ones(4, np.float32)
    cases = [
        (ValueError, "fusion_bytes", dict(arrays=[x], fusion_bytes=0)),
        (ValueError, "out must be a list of 1", dict(arrays=[x], out=[x, x])),
        (TypeError, "needs floating-point", dict(arrays=[x, np.ones(3, np.int32)], compression="fp16")),
        (TypeError, r"arrays\[1\]", dict(arrays=[x, [1.0, 2.0]])),
        (TypeError, "list or tuple", dict(arrays=x)),
        (ValueError, "unknown op", dict(arrays=[x], op="prod")),
        (ValueError, "unknown compression", dict(arrays=[x], compression="fp8")),
    ]
    for error, pattern, kwargs in cases:
        arrays = kwargs.pop("arrays")
        try:
            comm.allreduce_many(arrays, **kwargs)
        except error as caught:
            tally.check(re.search(pattern, str(caught)) is not None,
                        f"{kwargs}: message {caught!s} lacks {pattern!r}")
        except Exception as caught:  # noqa: BLE001 - reported as a failure
            tally.check(False, f"{kwargs}: raised {type(caught).__name__}: {caught}")
        else:
            tally.check(False, f"{kwargs}: no {error.__name__}")
    tally.check(comm.allreduce_many([]) == [], "empty list: not []")
    y = comm.allreduce_many([x], op="sum")[0]  # still usable after the errors
    tally.check(np.array_equal(y, np.full(4, comm.size, np.float32)), "after errors: wrong sum")


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    if sys.argv[1] == "--env-fusion-bytes":
        tally.check(comm.settings.fusion_bytes == int(sys.argv[2]), "env not applied")
        bucket_counts(comm, tally, None)
    else:
        matrix(comm, tally, sys.argv[1].split(","))
        bucket_counts(comm, tally, 8000)
        errors(comm, tally)
    tally.finish()


if __name__ == "__main__":
    main()
