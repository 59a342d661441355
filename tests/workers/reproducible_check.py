"""deterministic=True gives collectives.reference_reduce's bits for every algorithm, fusion
size, sync or async, and every node layout this job runs with.

Usage: mpiexec -n P python -m tests.workers.reproducible_check
Random data with exponents spread over 2^-20..2^20 (so the order of a sum shows in its
bits), float32, float64, float16 and bfloat16, sum and avg, sizes below and above a ring's
segment, all-reduce (single, fused, async), reduce-scatter and reduce; fp16/bf16 wires too.
"""
from __future__ import annotations

import numpy as np

import collectives
from collectives.algorithms import PLANNERS
from tests.workers.common import Tally

ALGORITHMS = ("auto", "native", *PLANNERS["allreduce"])
SIZES = (1, 7, 1001, 8400, 300_007)  # 8400: equal blocks at p = 2, 3, 4, 5, 8


def inputs(p: int, n: int, dtype) -> list[np.ndarray]:
    rng = np.random.default_rng(n * 31 + p)
    return [(rng.standard_normal(n) * np.exp2(rng.integers(-20, 20, n))).astype(dtype)
            for _ in range(p)]


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    p, me = comm.size, comm.rank
    for dtype in (np.float32, np.float64, np.float16, collectives.DTYPES[1]):
        for n in SIZES if np.dtype(dtype).itemsize >= 4 else SIZES[:4]:
            xs = inputs(p, n, dtype)
            for op in ("sum", "avg"):
                want = collectives.reference_reduce(xs, op)
                case = f"{np.dtype(dtype)} n={n} {op}"
                for algorithm in ALGORITHMS:
                    y = comm.allreduce(xs[me], op=op, algorithm=algorithm, deterministic=True)
                    tally.check(y.tobytes() == want.tobytes(), f"allreduce {algorithm} {case}")
                    x = xs[me].copy()
                    for out, into in ((np.empty_like(x), "out"), (x, "in place")):
                        y = comm.allreduce(x, op=op, algorithm=algorithm, deterministic=True,
                                           out=out)
                        tally.check(y is out and y.tobytes() == want.tobytes(),
                                    f"allreduce {algorithm} {case} {into}")
                    parts = comm.allreduce_many([xs[me][: n // 3], xs[me][n // 3:]], op=op,
                                                algorithm=algorithm, deterministic=True,
                                                fusion_bytes=1 + n // 2)
                    tally.check(np.concatenate(parts).tobytes() == want.tobytes(),
                                f"allreduce_many {algorithm} {case}")
                h = comm.allreduce_async(xs[me], op=op, deterministic=True)
                tally.check(h.wait().tobytes() == want.tobytes(), f"allreduce_async {case}")
                for algorithm in ("auto", "native", *PLANNERS["reduce_scatter"]):
                    block = comm.reduce_scatter(xs[me], op=op, algorithm=algorithm,
                                                deterministic=True)
                    tally.check(block.tobytes() == np.array_split(want, p)[me].tobytes(),
                                f"reduce_scatter {algorithm} {case}")
                y = comm.reduce(xs[me], root=p - 1, op=op, deterministic=True)
                tally.check(me != p - 1 or y.tobytes() == want.tobytes(), f"reduce {case}")
                for compression in ("fp16", "bf16"):
                    want16 = collectives.reference_reduce(xs, op, compression=compression)
                    y = comm.allreduce(xs[me], op=op, algorithm="ring", compression=compression,
                                       deterministic=True)
                    tally.check(y.tobytes() == want16.tobytes(), f"{compression} {case}")
    tally.finish()


if __name__ == "__main__":
    main()
