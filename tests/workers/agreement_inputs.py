"""Bad input, passed alike on every rank, gets its own clear error; NaN and Inf propagate.

Usage: mpiexec -n P python -m tests.workers.agreement_inputs ALG[,ALG...]
Every rank passes the same bad argument, so every rank raises the local error (TypeError
or ValueError naming the value and what is accepted), and the next collective works.
"""
from __future__ import annotations

import sys

import numpy as np

import collectives
from tests.workers.common import Tally, digest, rank_data, reference, everyone

COUNT = 64


def bad_inputs(rank: int):
    """(name, allreduce kwargs, expected exception, text the message must hold)."""
    x = rank_data(COUNT, np.float32, rank)
    frozen = x.copy()
    frozen.flags.writeable = False
    buffer = np.zeros(COUNT + 8, np.float32)
    buffer[:COUNT] = x
    yield "list", dict(x=list(x)), TypeError, "must be a NumPy or CuPy array, got builtins.list"
    yield "scalar", dict(x=3.0), TypeError, "must be a NumPy or CuPy array, got builtins.float"
    for dtype in (np.complex64, np.bool_, np.object_, np.int8, np.uint64):
        yield (f"dtype {np.dtype(dtype)}", dict(x=np.zeros(COUNT, dtype)), TypeError,
               f"unsupported dtype {np.dtype(dtype)}; supported: float16, bfloat16")
    yield "op typo", dict(x=x, op="smu"), ValueError, "unknown op 'smu'"
    yield "op typo hint", dict(x=x, op="mx"), ValueError, "did you mean 'max'?"
    yield "algorithm typo", dict(x=x, algorithm="rign"), ValueError, "did you mean 'ring'?"
    yield ("compression typo", dict(x=x, compression="fp61"), ValueError,
           "did you mean 'fp16'?")
    yield ("out shape", dict(x=x, out=np.empty(COUNT + 1, np.float32)), ValueError,
           f"expected shape ({COUNT},) dtype float32, got shape ({COUNT + 1},) dtype float32")
    yield ("out dtype", dict(x=x, out=np.empty(COUNT, np.float64)), ValueError,
           "dtype float32, got shape")
    yield "out type", dict(x=x, out=[0.0] * COUNT), TypeError, "out must be a numpy array like x"
    out = np.empty(COUNT, np.float32)
    out.flags.writeable = False
    yield "out read-only", dict(x=x, out=out), ValueError, "out is read-only"
    yield "in place on read-only x", dict(x=frozen, out=frozen), ValueError, "x is read-only"
    yield ("out overlaps x", dict(x=buffer[:COUNT], out=buffer[8:]), ValueError,
           "out overlaps x partially")
    masked = np.ma.masked_array(x, mask=np.arange(COUNT) % 2 == 0)
    yield "masked array", dict(x=masked), TypeError, "x is a masked array: its mask would be ignored"
    yield "np.matrix", dict(x=np.asmatrix(x)), TypeError, "x is an np.matrix"
    # a result that cannot be allocated (4 TiB from a stride-0 view): refused before the
    # agreement; raised in the data phase, it left the communicator unusable
    yield ("result too large", dict(x=np.broadcast_to(np.float32(1), (1 << 40,))),
           MemoryError, "Unable to allocate")


def bad_many(rank: int):
    """(name, allreduce_many kwargs, expected exception, text): outs that alias other arrays,
    results that cannot be allocated."""
    a, b = rank_data(COUNT, np.float32, rank), rank_data(COUNT, np.float32, rank + 1)
    yield ("outs crossed", dict(arrays=[a, b], out=[b, a]), ValueError,
           "arrays[1] and out[0] share memory")
    shared = np.zeros(2 * COUNT, np.float32)
    yield ("outs overlap each other", dict(arrays=[a, b], out=[shared[:COUNT], shared[4:COUNT + 4]]),
           ValueError, "out[0] and out[1] share memory")
    big = np.zeros(2 * COUNT, np.float32)
    yield ("out overlaps another input",
           dict(arrays=[a, big[:COUNT]], out=[big[COUNT // 2: COUNT // 2 + COUNT],
                                             np.empty(COUNT, np.float32)]),
           ValueError, "arrays[1] and out[0] share memory")
    yield ("results too large", dict(arrays=[a, np.broadcast_to(np.float32(1), (1 << 40,))]),
           MemoryError, "Unable to allocate")


def main() -> None:
    algorithms = sys.argv[1].split(",")
    comm = collectives.init()
    p, rank = comm.size, comm.rank
    tally = Tally(rank)
    for name, kwargs, expected, text in bad_inputs(rank):
        try:
            comm.allreduce(kwargs.pop("x"), **kwargs)
            tally.check(False, f"{name}: no error, expected {expected.__name__}")
        except Exception as error:  # noqa: BLE001 - the type is what is checked (NumPy's
            # MemoryError is a subclass)
            tally.check(isinstance(error, expected) and text in str(error),
                        f"{name}: got {type(error).__name__}: {error}; expected "
                        f"{expected.__name__} with {text!r}")
        y = comm.allreduce(rank_data(COUNT, np.float32, rank))
        tally.check(np.array_equal(y, reference(COUNT, np.float32, p, "sum")),
                    f"{name}: the next all-reduce is wrong")
    for name, kwargs, expected, text in bad_many(rank):
        arrays = [a for a in kwargs["arrays"] if a.nbytes < 1 << 30]  # (not 4 TiB of a
        # read-only stride-0 view)
        before = [a.copy() for a in arrays]
        try:
            comm.allreduce_many(**kwargs)
            tally.check(False, f"{name}: no error, expected {expected.__name__}")
        except Exception as error:  # noqa: BLE001 - the type is what is checked (NumPy's
            # MemoryError is a subclass)
            tally.check(isinstance(error, expected) and text in str(error),
                        f"{name}: got {type(error).__name__}: {error}; expected "
                        f"{expected.__name__} with {text!r}")
        tally.check(all(np.array_equal(a, c) for a, c in zip(arrays, before)),
                    f"{name}: the refused call changed its inputs")
        y = comm.allreduce(rank_data(COUNT, np.float32, rank))
        tally.check(np.array_equal(y, reference(COUNT, np.float32, p, "sum")),
                    f"{name}: the next all-reduce is wrong")
    for algorithm in algorithms:
        check_non_finite(comm, algorithm, tally)
    tally.finish()


def check_non_finite(comm, algorithm: str, tally: Tally) -> None:
    """NaN and Inf from one rank reach every rank, as in MPI: x + NaN = NaN, Inf - Inf = NaN."""
    p, rank = comm.size, comm.rank
    for dtype in (np.float16, np.float32, np.float64):
        x = rank_data(COUNT, dtype, rank)
        x[3] = np.nan if rank == p - 1 else 1
        x[5] = np.inf if rank == 0 else 1
        x[9] = np.inf if rank == 0 else (-np.inf if rank == p - 1 else 0)
        for op in ("sum", "avg", "max", "min"):
            case = f"{algorithm} {np.dtype(dtype)} {op}"
            y = comm.allreduce(x, op=op, algorithm=algorithm)
            tally.check(np.isnan(y[3]), f"{case}: NaN from rank {p - 1} lost: {y[3]}")
            if op in ("sum", "avg", "max"):
                tally.check(y[5] == np.inf, f"{case}: Inf from rank 0 lost: {y[5]}")
            if op in ("sum", "avg") and p > 1:
                tally.check(np.isnan(y[9]), f"{case}: Inf + -Inf is {y[9]}, not NaN")
            finite = np.ones(COUNT, bool)
            finite[[3, 5, 9]] = False
            tally.check(np.isfinite(y[finite]).all(), f"{case}: NaN/Inf leaked into other elements")
            digests = everyone(digest(y))
            tally.check(len(set(digests)) == 1, f"{case}: ranks differ in bits")


if __name__ == "__main__":
    main()
