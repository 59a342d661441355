"""Compression, fusion and async on CuPy arrays give the NumPy path's bits, as CuPy arrays.

Usage: mpiexec -n P python -m tests.workers.gpu_features [--transport T]
The NumPy twin of every kernel is the reference, so the same call on the same values must
produce identical bits whichever array module carries them.
`--dry-run-on-numpy` runs the same code with NumPy in CuPy's place (checks the worker).
"""
from __future__ import annotations

import sys

if "--dry-run-on-numpy" in sys.argv:  # checks this worker's own logic on a CPU
    import numpy as cp

    cp.asnumpy = cp.asarray
else:
    import cupy as cp
import ml_dtypes
import numpy as np

import collectives
from tests.workers.common import Tally, digest, rank_data

DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)


def data(rank: int, count: int, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(1000 * seed + rank)
    return rng.standard_normal(count).astype(dtype)


def same(tally: Tally, case: str, got, want: np.ndarray) -> None:
    tally.check(isinstance(got, cp.ndarray), f"{case}: got {type(got)}")
    tally.check(got.shape == want.shape and got.dtype == want.dtype,
                f"{case}: got {got.dtype}{got.shape}, want {want.dtype}{want.shape}")
    tally.check(digest(cp.asnumpy(got)) == digest(want), f"{case}: bits differ from NumPy's")


def main() -> None:
    transport = sys.argv[sys.argv.index("--transport") + 1] if "--transport" in sys.argv else "mpi"
    comm = collectives.init(transport=transport)
    tally = Tally(comm.rank)
    # NCCL's own all-reduce adds in its own order: its float bits need not match MPI's.
    exact_native = transport == "mpi"
    algorithms = [a for a in collectives.ALGORITHMS if exact_native or a not in ("native", "auto")]
    for algorithm in algorithms:
        for compression in ("fp16", "bf16"):
            for op in ("sum", "avg", "max", "min"):
                x = data(comm.rank, 10007, np.float32)
                case = f"{algorithm} {compression} {op}"
                want = comm.allreduce(x, op=op, algorithm=algorithm, compression=compression)
                got = comm.allreduce(cp.asarray(x), op=op, algorithm=algorithm,
                                     compression=compression)
                same(tally, case, got, want)
        xs = [data(comm.rank, 300 + 41 * i, d, seed=i).reshape(-1, 1) for i, d in enumerate(DTYPES)]
        xs.append(rank_data(1001, np.int32, comm.rank))
        for compression in (None, "fp16"):
            kwargs = dict(op="avg", algorithm=algorithm, fusion_bytes=2048)
            floats = xs[:-1] if compression else xs
            want = comm.allreduce_many(floats, compression=compression, **kwargs)
            got = comm.allreduce_many([cp.asarray(x) for x in floats], compression=compression,
                                      **kwargs)
            for i, (g, w) in enumerate(zip(got, want)):
                same(tally, f"{algorithm} many {compression} #{i} {w.dtype}", g, w)
        if cp is not np and comm.size > 1:  # CuPy on rank 0 only: refused on every rank
            mixed = [cp.asarray(x) if comm.rank == 0 else x for x in xs[:2]]
            try:
                comm.allreduce_many(mixed, algorithm=algorithm)
                tally.check(False, f"{algorithm} many: CuPy beside NumPy accepted")
            except collectives.MismatchError as error:
                tally.check("array" in str(error), f"{algorithm} many: {error}")
        x = data(comm.rank, 5000, np.float32)
        handle = comm.allreduce_async(cp.asarray(x), op="sum", algorithm=algorithm)
        same(tally, f"{algorithm} async", handle.wait(),
             comm.allreduce(x, op="sum", algorithm=algorithm))
    for dtype in (np.float32, np.int32, np.int64):  # (an integer avg folded CuPy rows into
        for op in ("sum", "avg"):  # NumPy buffers: the eighty-fifth review)
            x = rank_data(1001, dtype, comm.rank)
            same(tally, f"deterministic {op} {np.dtype(dtype)}",
                 comm.allreduce(cp.asarray(x), op=op, deterministic=True),
                 comm.allreduce(x, op=op, deterministic=True))
    tally.finish()


if __name__ == "__main__":
    main()
