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
    check_fused_compression(comm, tally)
    check_stats(comm, tally)
    check_with_error_feedback(comm, tally)
    tally.finish()


def check_with_error_feedback(comm, tally: Tally) -> None:
    """Error feedback under COLLECTIVES_DETERMINISTIC=1: GradSync took it, then every sync
    raised "pass one of them", naming neither the setting nor what GradSync can take (the
    forty-third review). Now it is refused where it is given, naming the setting."""
    default = comm.settings.deterministic
    for what, make in (("GradSync", lambda: collectives.GradSync(
                            comm, compression="fp16", error_feedback=True)),
                       ("allreduce", lambda: comm.allreduce(
                            np.ones(3, np.float32), compression="fp16",
                            error_feedback=True))):
        try:
            make()
            tally.check(not default, f"{what} with error feedback accepted under the setting")
        except ValueError as error:
            tally.check(default and "COLLECTIVES_DETERMINISTIC=1" in str(error),
                        f"{what} with error feedback: {error}")


def check_fused_compression(comm, tally: Tally) -> None:
    """Arrays of far apart magnitudes fused into one bucket: each keeps its own scale, so
    its bits are reference_reduce's of it alone whatever the buckets (one scale per
    bucket flushed the small one to 300% off: the forty-third review)."""
    p, me = comm.size, comm.rank
    rng = np.random.default_rng(43)
    arrays = [[(rng.standard_normal(n) * magnitude).astype(np.float32) for _ in range(p)]
              for n, magnitude in ((1000, 1e-6), (0, 1.0), (333, 1e4), (5, 0.0))]
    # many small arrays of scattered magnitudes (one pass per distinct scale), and runs
    # of alternating magnitudes too long for that (one call per run)
    arrays += [[(rng.standard_normal(n) * 10.0 ** e).astype(np.float32) for _ in range(p)]
               for n, e in zip(rng.integers(0, 8, 200), rng.choice([-4, 0, 4], 200))]
    arrays += [[(rng.standard_normal(3000) * 10.0 ** (3 * (i % 2))).astype(np.float32)
                for _ in range(p)] for i in range(40)]
    for compression in ("fp16", "bf16"):
        for op in ("sum", "avg"):
            wants = [collectives.reference_reduce(xs, op, compression=compression)
                     for xs in arrays]
            for algorithm in ("ring", "native"):
                for fusion_bytes in (64 << 20, 4000, 1):
                    got = comm.allreduce_many([xs[me] for xs in arrays], op=op,
                                              algorithm=algorithm, compression=compression,
                                              deterministic=True, fusion_bytes=fusion_bytes)
                    wrong = [i for i, (g, w) in enumerate(zip(got, wants))
                             if g.tobytes() != w.tobytes()]
                    tally.check(not wrong, f"fused {compression} {op} {algorithm} buckets of "
                                f"{fusion_bytes} B: arrays {wrong[:5]} differ")


def check_stats(comm, tally: Tally) -> None:
    """A deterministic call is in comm.stats() whatever moves it: MPI's own collectives
    were left out (the forty-third review), a codec is named."""
    p = comm.size
    x = np.ones(1 << 12, np.float32)
    for algorithm, compression, label in (("native", None, "native"),
                                          ("ring", "fp16", "pairwise+fp16"),
                                          ("native", "bf16", "native+bf16")):
        comm.reset_stats()
        comm.allreduce(x, algorithm=algorithm, compression=compression, deterministic=True)
        stats = comm.stats()
        entry = stats.by_algorithm.get(f"deterministic:alltoall:{label}")
        row = -(-x.size // p) * (4 if compression is None else 2)  # a block, padded
        tally.check(p == 1 or (entry is not None and entry.calls == 1
                               and entry.bytes_sent == (p - 1) * row),
                    f"stats of a deterministic {algorithm} {compression}: {dict(stats)}")


if __name__ == "__main__":
    main()
