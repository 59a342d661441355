"""The agreement check's cost: the same all-reduce with the check on and off, side by side.

Two communicators over the same ranks, one with `check=True`, one with `check=False`,
run the same calls in alternating rounds (so drift in a loaded machine hits both alike);
each cell is the median over rounds of the slowest rank's mean time per call.

Example::

    python -m bench.agreement_cost --np 2                     # starts 2 ranks itself
    mpiexec -n 2 python -m bench.agreement_cost --sizes 4K,64M --algorithms native,ring
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import numpy as np

from bench import harness, launch
from bench.sizes import format_size, parse_size

__all__ = ["main"]

_MODULE = "bench.agreement_cost"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.agreement_cost",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="4K,64M", help="message sizes (default 4K,64M)")
    parser.add_argument("--algorithms", default="auto", help="comma-separated (default auto)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="seconds per cell and round, which sets the iterations (default 0.5)")
    launch.add_launch_argument(parser, default=2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np)
    from mpi4py import MPI

    import collectives

    mpi = MPI.COMM_WORLD
    comms = {"on": collectives.init(check=True), "off": collectives.init(check=False)}
    rows = []
    for algorithm in args.algorithms.split(","):
        for nbytes in sizes:
            x = np.ones(nbytes // 4, np.float32)
            out = np.empty_like(x)
            calls = {state: (lambda c=c: c.allreduce(x, algorithm=algorithm, out=out))
                     for state, c in comms.items()}
            probe = harness.time_per_iteration(mpi, calls["on"], iters=3, warmup=2)
            iters = max(3, min(20000, int(args.budget / max(probe, 1e-7))))
            times: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(args.rounds):
                for state in ("on", "off"):
                    times[state].append(harness.time_per_iteration(
                        mpi, calls[state], iters=iters, warmup=max(1, iters // 10)))
            on, off = (statistics.median(times[s]) for s in ("on", "off"))
            rows.append((nbytes, algorithm, iters, on, off))
    if mpi.rank == 0:
        print(f"# agreement check cost: {mpi.size} ranks, float32 sum, {args.rounds} rounds, "
              "median of the slowest rank's mean")
        print(f"# {'size':>9}  {'algorithm':>16}  {'iters':>6}  {'check on us':>12}  "
              f"{'check off us':>12}  {'on/off':>6}  {'cost us':>8}")
        for nbytes, algorithm, iters, on, off in rows:
            print(f"  {format_size(nbytes):>9}  {algorithm:>16}  {iters:>6}  "
                  f"{on * 1e6:12.1f}  {off * 1e6:12.1f}  {on / off:6.3f}  {(on - off) * 1e6:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
