"""fp16/bf16 compression on every algorithm: error bounds, overflow, identical bits, dtypes.

Usage: mpiexec -n P python -m tests.workers.compression_check [ALG,ALG...]   (default: all)
Relative error (2-norm) vs the exact float64 sum of N(0,1) data must stay within 2e-3 (fp16)
and 2e-2 (bf16); 60000.0 on every rank must not become inf; every rank must hold the same
bits; results keep the input's dtype; error feedback must cancel a constant rounding bias.
"""
from __future__ import annotations

import sys

import ml_dtypes
import numpy as np

import collectives
from tests.workers.common import Tally, digest, everyone

BOUND = {"fp16": 2e-3, "bf16": 2e-2}
COUNT = 10007  # odd: uneven chunks and segments


def normal(rank: int, count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(1000 * seed + rank).standard_normal(count)


def exact(size: int, count: int, op: str, seed: int = 0) -> np.ndarray:
    stack = np.stack([normal(r, count, seed) for r in range(size)])
    if op == "max":
        return stack.max(axis=0)
    if op == "min":
        return stack.min(axis=0)
    return stack.sum(axis=0) / (size if op == "avg" else 1)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


def same_bits(comm, arrays) -> bool:
    digests = everyone([digest(a) for a in arrays])
    return all(d == digests[0] for d in digests)


def accuracy(comm, tally, algorithm: str, compression: str) -> None:
    bound = BOUND[compression]
    x = normal(comm.rank, COUNT).astype(np.float32)
    for op in ("sum", "avg", "max", "min"):
        case = f"{algorithm} {compression} {op}"
        y = comm.allreduce(x, op=op, algorithm=algorithm, compression=compression)
        error = relative_error(y, exact(comm.size, COUNT, op))
        tally.check(y.dtype == np.float32 and y.shape == x.shape, f"{case}: dtype {y.dtype}")
        tally.check(error <= bound, f"{case}: relative error {error:.2e} > {bound:.0e}")
        tally.check(same_bits(comm, [y]), f"{case}: ranks differ in bits")
        if comm.rank == 0 and op == "sum":
            print(f"{case}: relative error {error:.2e} (bound {bound:.0e})", flush=True)


def mixed(comm, tally, algorithm: str, compression: str) -> None:
    """allreduce_many over float16, bfloat16, float32, float64: each keeps its dtype."""
    dtypes = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
    xs = [normal(comm.rank, 500 + 37 * i, seed=i).astype(d).reshape(-1, 1)
          for i, d in enumerate(dtypes)]
    ys = comm.allreduce_many(xs, op="avg", algorithm=algorithm, compression=compression,
                             fusion_bytes=1024)
    for i, (x, y) in enumerate(zip(xs, ys)):
        case = f"{algorithm} {compression} many {x.dtype}"
        tally.check(y.dtype == x.dtype and y.shape == x.shape, f"{case}: got {y.dtype}{y.shape}")
        # the inputs themselves were rounded to their dtype: compare against that exact avg
        want = np.mean([normal(r, x.size, seed=i).astype(x.dtype).astype(np.float64)
                        for r in range(comm.size)], axis=0)
        bound = max(BOUND[compression], 4 * float(ml_dtypes.finfo(x.dtype).eps))
        error = relative_error(y.reshape(-1), want)
        tally.check(error <= bound, f"{case}: relative error {error:.2e} > {bound:.0e}")
    tally.check(same_bits(comm, ys), f"{algorithm} {compression} many: ranks differ in bits")


def overflow(comm, tally, algorithm: str, compression: str) -> None:
    """60000.0 on every rank: near fp16's max, yet p * 60000 must come out finite."""
    p = comm.size
    x = np.full(1003, 60000.0, np.float32)
    y = comm.allreduce(x, op="sum", algorithm=algorithm, compression=compression)
    case = f"{algorithm} {compression} 60000 sum"
    tally.check(bool(np.isfinite(y).all()), f"{case}: inf/nan in {y[:3]}")
    error = float(np.abs(y.astype(np.float64) - 60000.0 * p).max() / (60000.0 * p))
    tally.check(error <= BOUND[compression], f"{case}: relative error {error:.2e}")
    h = np.full(1003, 60000.0, np.float16)
    z = comm.allreduce(h, op="avg", algorithm=algorithm, compression=compression)
    tally.check(z.dtype == np.float16 and bool(np.isfinite(z).all()),
                f"{algorithm} {compression} float16 60000 avg: {z[:3]}")
    tally.check(bool((np.abs(z.astype(np.float64) - 60000.0) <= 60000.0 * BOUND[compression]).all()),
                f"{algorithm} {compression} float16 60000 avg: {z[:3]}")
    tally.check(same_bits(comm, [y, z]), f"{case}: ranks differ in bits")


def non_finite_isolated(comm, tally, algorithm: str, compression: str) -> None:
    """One NaN and one Inf in a fused bucket stay where they are: the other arrays are scaled
    as if they were absent (40000 * p is no fp16 value; unscaled it would overflow)."""
    p = comm.size
    big = np.full(257, 40000.0, np.float32)
    odd = np.ones(5, np.float32)
    if comm.rank == 0:
        odd[0], odd[1] = np.nan, np.inf
    y, z = comm.allreduce_many([big, odd], op="sum", algorithm=algorithm, compression=compression)
    case = f"{algorithm} {compression} NaN beside 40000"
    tally.check(bool(np.isfinite(y).all()), f"{case}: the finite array became {y[:3]}")
    error = float(np.abs(y.astype(np.float64) - 40000.0 * p).max() / (40000.0 * p))
    tally.check(error <= BOUND[compression], f"{case}: relative error {error:.2e}")
    tally.check(bool(np.isnan(z[0]) and np.isposinf(z[1]) and (z[2:] == p).all()),
                f"{case}: the non-finite array came out {z}")


def feedback(comm, tally, compression: str) -> None:
    """A value fp16/bf16 cannot hold, reduced 16 times: feedback must cancel the bias."""
    value = 1.0 + 2.0 ** -13 if compression == "fp16" else 1.0 + 2.0 ** -10
    x = np.full(256, value, np.float32)
    want = value * comm.size
    errors = {}
    for error_feedback in (False, "bias-test"):
        total = np.zeros(256, np.float64)
        for _ in range(16):
            total += comm.allreduce(x, op="sum", algorithm="ring", compression=compression,
                                    error_feedback=error_feedback)
        errors[error_feedback] = float(np.abs(total / 16 - want).max() / want)
    plain, fed = errors[False], errors["bias-test"]
    if comm.rank == 0:
        print(f"{compression} error feedback: mean error {plain:.2e} without, {fed:.2e} with",
              flush=True)
    tally.check(fed < plain / 2, f"{compression} error feedback: {fed:.2e} vs {plain:.2e} without")


def feedback_after_non_finite(comm, tally, compression: str) -> None:
    """An overflowing step (NaN and inf on rank 0, as an fp16 step GradScaler skips) carries
    nothing into the residual: the next steps, finite everywhere, come out finite and right."""
    for name, bad in (("NaN", np.nan), ("inf", np.inf)):
        x = np.full(8, 0.25 * (comm.rank + 1), np.float32)
        if comm.rank == 0:
            x[2] = bad
        comm.allreduce_many([x], op="avg", algorithm="ring", compression=compression,
                            error_feedback=f"poison-{name}")
        want = 0.25 * (comm.size + 1) / 2
        for step in (1, 2):
            x = np.full(8, 0.25 * (comm.rank + 1), np.float32)
            (y,) = comm.allreduce_many([x], op="avg", algorithm="ring",
                                       compression=compression,
                                       error_feedback=f"poison-{name}")
            tally.check(bool(np.isfinite(y).all()) and abs(float(y[2]) - want) <= want * 1e-2,
                        f"{compression} error feedback, step {step} after a {name}: {y}")


def errors(comm, tally) -> None:
    for bad, error in ((np.arange(5, dtype=np.int32), TypeError), (np.ones(3), ValueError)):
        compression = "fp16" if error is TypeError else "zstd"
        try:
            comm.allreduce(bad, compression=compression)
        except error as caught:
            tally.check(repr(compression) in str(caught), f"message lacks the name: {caught}")
        else:
            tally.check(False, f"compression={compression} on {bad.dtype}: no {error.__name__}")
    try:
        comm.allreduce(np.ones(3, np.float32), error_feedback=True)
    except ValueError as caught:
        tally.check("compression" in str(caught), f"error_feedback without compression: {caught}")
    else:
        tally.check(False, "error_feedback without compression: no ValueError")


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    algorithms = sys.argv[1].split(",") if len(sys.argv) > 1 else list(collectives.ALGORITHMS)
    for algorithm in algorithms:
        for compression in ("fp16", "bf16"):
            accuracy(comm, tally, algorithm, compression)
            mixed(comm, tally, algorithm, compression)
            overflow(comm, tally, algorithm, compression)
            non_finite_isolated(comm, tally, algorithm, compression)
    for compression in ("fp16", "bf16"):
        feedback(comm, tally, compression)
        feedback_after_non_finite(comm, tally, compression)
    errors(comm, tally)
    tally.finish()


if __name__ == "__main__":
    main()
