"""Stress the shared-memory transport where the soak once truncated: compressed, async, fused.

Usage: COLLECTIVES_SHM=1 mpiexec -n P python -m tests.workers.shm_stress [ITERATIONS] [SEED]

Every rank draws the same sequence from SEED: batches of async compressed all-reduces,
async fused lists cut into several buckets (one tag for all of them), sync calls, and
deliberate mismatches (sync and async) that must raise MismatchError everywhere and leave
the communicator working. Sizes sit around p * 43 elements, where ring segments of
neighbouring rounds differ by one 16-bit element (the 86 vs 88 bytes of the soak's failure),
with a few larger ones that grow the shared window mid-run. Each result is checked against
the closed form; any other error (an MPI truncation included) ends the run with a failure.
"""
from __future__ import annotations

import sys
import time

import numpy as np

import collectives
from tests.workers.common import Tally, rank_data, reference

ALGORITHMS = ("ring", "halving_doubling", "torus2d", "hierarchical", "auto", "native")
COMPRESSIONS = ("fp16", "bf16", "fp16", "bf16", None)


def count_for(rng: np.random.Generator, p: int) -> int:
    if rng.random() < 0.05:
        return int(rng.integers(1, 1 << 17))  # now and then a window growth
    return int(p * 43 + rng.integers(-4, 5))


def close(y: np.ndarray, count: int, p: int, op: str, compression) -> bool:
    want = reference(count, np.float64, p, op)
    tolerance = 0.0 if compression is None else 0.05  # |values| <= 4 * p, 16-bit rounding
    return y.shape == (count,) and bool(np.all(np.abs(y.astype(np.float64) - want) <= tolerance
                                               + 1e-6))


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    comm = collectives.init()
    tally = Tally(comm.rank)
    p, me = comm.size, comm.rank
    tally.check(comm.transport_name == "mpi+shm", f"transport {comm.transport_name}, not shm")
    rng = np.random.default_rng(seed)
    start = time.monotonic()
    kinds = {"async": 0, "many_async": 0, "sync": 0, "mismatch": 0, "async_mismatch": 0}
    for i in range(iterations):
        kind = str(rng.choice(list(kinds), p=[0.4, 0.3, 0.15, 0.08, 0.07]))
        kinds[kind] += 1
        algorithm = str(rng.choice(ALGORITHMS))
        compression = COMPRESSIONS[rng.integers(len(COMPRESSIONS))]
        op = str(rng.choice(["sum", "avg", "max", "min"]))
        what = f"#{i} {kind} {algorithm} {compression} {op}"
        if kind == "async":
            counts = [count_for(rng, p) for _ in range(int(rng.integers(1, 5)))]
            handles = [comm.allreduce_async(rank_data(n, np.float32, me), op=op,
                                            algorithm=algorithm, compression=compression)
                       for n in counts]
            for n, h in zip(counts, handles):
                tally.check(close(h.wait(), n, p, op, compression), f"{what} count {n}: wrong")
        elif kind == "many_async":
            counts = [count_for(rng, p) for _ in range(int(rng.integers(2, 9)))]
            arrays = [rank_data(n, np.float32, me) for n in counts]
            # Buckets of about one array each: several plans in one call, one tag.
            fusion_bytes = int(rng.choice([4 * p * 43, 8 * p * 43, 1 << 16]))
            h = comm.allreduce_many_async(arrays, op=op, algorithm=algorithm,
                                          compression=compression, fusion_bytes=fusion_bytes)
            for n, y in zip(counts, h.wait()):
                tally.check(close(y, n, p, op, compression), f"{what} count {n}: wrong")
        elif kind == "sync":
            n = count_for(rng, p)
            y = comm.allreduce(rank_data(n, np.float32, me), op=op, algorithm=algorithm,
                               compression=compression)
            tally.check(close(y, n, p, op, compression), f"{what} count {n}: wrong")
        else:
            n = count_for(rng, p) + (me == p - 1)  # the last rank passes one more element
            x = rank_data(n, np.float32, me)
            kwargs = dict(op=op, algorithm=algorithm, compression=compression)
            before = comm.allreduce_async(rank_data(p * 43, np.float32, me), **kwargs)
            try:
                if kind == "mismatch":
                    comm.allreduce(x, **kwargs)
                else:
                    comm.allreduce_async(x, **kwargs).wait()
                tally.check(False, f"{what}: no MismatchError")
            except collectives.MismatchError as error:
                tally.check("has shape" in str(error), f"{what}: unexpected mismatch {error}")
            y = before.wait()  # queued before the mismatch: unaffected by it
            tally.check(close(y, p * 43, p, op, compression), f"{what}: call before it wrong")
        if me == 0 and (i + 1) % 100 == 0:
            print(f"{i + 1} iterations, {time.monotonic() - start:.1f} s", flush=True)
    if me == 0:
        print(f"{iterations} iterations of {kinds} in {time.monotonic() - start:.1f} s", flush=True)
    tally.finish()


if __name__ == "__main__":
    main()
