"""The cost of repeating a call of the other collectives: the lane, the general path, MPI's.

The collectives besides all-reduce, each repeated through the small-call lane, through the
general path, and as MPI's own collective.

Three cells per collective and size, on the same preallocated buffers (`out=`): `mpi`, MPI's
own collective called through mpi4py outside the library; `lane`, the library's call
repeated (its route: the call built once, run again); `general`, the same call with x seen
as an ndarray subclass, which the lane leaves to the general path (the call built and
checked anew every time). They run in alternating rounds; a cell is the median over rounds
of the slowest rank's mean time per call.

Example::

    python -m bench.lane_cost --np 2 --sizes 8K,64K,1M      # starts 2 ranks itself
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import numpy as np

from bench import harness, launch
from bench.arguments import positive_int, positive_seconds, refuse_beyond_memory, size_list
from bench.sizes import format_size

__all__ = ["main"]

_MODULE = "bench.lane_cost"
PLANS = {"allgather": "ring", "reduce_scatter": "ring", "broadcast": "tree"}
STATES = ("mpi", "lane", "general")


class _General(np.ndarray):
    """x seen as a subclass: the lane takes exact ndarrays only."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.lane_cost",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--collectives", default=",".join(PLANS),
                        help=f"comma-separated, each run with its plan {PLANS}")
    parser.add_argument("--sizes", type=size_list, default="8K,64K,1M",
                        help="bytes of the whole buffer, as nccl-tests counts it "
                             "(default 8K,64K,1M)")
    parser.add_argument("--rounds", type=positive_int, default=5,
                        help="alternating rounds (default 5)")
    parser.add_argument("--budget", type=positive_seconds, default=0.2,
                        help="seconds per cell and round, which sets the iterations "
                             "(default 0.2)")
    launch.add_launch_argument(parser, default=2)
    return parser


def calls(comm, raw, collective: str, nbytes: int) -> dict[str, Callable[[], object]]:
    """mpi / lane / general calls of `collective` on preallocated float32 buffers."""
    p, algorithm = comm.size, PLANS[collective]
    n = max(p, nbytes // 4 // p * p)
    if collective == "allgather":
        x, out, whole = np.ones(n // p, np.float32), np.empty((p, n // p), np.float32), \
            np.empty(n, np.float32)
        mpi = lambda: raw.Allgather(x, whole)  # noqa: E731
        library = lambda v: comm.allgather(v, algorithm=algorithm, out=out)  # noqa: E731
    elif collective == "reduce_scatter":
        x, out = np.ones(n, np.float32), np.empty(n // p, np.float32)
        mpi = lambda: raw.Reduce_scatter_block(x, out)  # noqa: E731
        library = lambda v: comm.reduce_scatter(  # noqa: E731
            v, algorithm=algorithm, out=out, deterministic=False)
    else:  # broadcast, in place as MPI_Bcast
        x = np.ones(n, np.float32)
        mpi = lambda: raw.Bcast(x)  # noqa: E731
        general = x.view(_General)
        return {"mpi": mpi, "lane": lambda: comm.broadcast(x, algorithm=algorithm, out=x),
                "general": lambda: comm.broadcast(general, algorithm=algorithm, out=general)}
    general = x.view(_General)
    return {"mpi": mpi, "lane": lambda: library(x), "general": lambda: library(general)}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    with launch.agreed_checks(parser):
        args = parser.parse_args(argv)
        names = args.collectives.split(",")
        unknown = sorted(set(names) - set(PLANS))
        if unknown:
            parser.error(f"unknown collectives {', '.join(unknown)}; choose from "
                         f"{', '.join(PLANS)}")
        refuse_beyond_memory(parser, max(args.sizes), launch.ranks_here(args.np, None),
                             flag="--sizes")
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np)
    from mpi4py import MPI

    import collectives

    mpi = MPI.COMM_WORLD
    comm, raw = collectives.init(), mpi.Dup()
    rows = []
    for name in names:
        for nbytes in args.sizes:
            rows.append((name, nbytes, harness.alternating_medians(
                mpi, calls(comm, raw, name, nbytes), rounds=args.rounds, budget=args.budget,
                probe="general")))
            if mpi.rank == 0:
                print(f"# {name} {format_size(nbytes)} done", file=sys.stderr, flush=True)
    if mpi.rank == 0:
        print(f"# repeated calls: {mpi.size} ranks, float32, out= given, {args.rounds} "
              "alternating rounds; us per call (the slowest rank's mean; median of rounds)")
        print(f"# {'collective':>15} {'plan':>5} {'size':>9} {'mpi':>8} {'lane':>8} "
              f"{'general':>8} {'lane/mpi':>9} {'saved':>7}")
        for name, nbytes, t in rows:
            us = {state: t[state] * 1e6 for state in STATES}
            print(f"  {name:>15} {PLANS[name]:>5} {format_size(nbytes):>9} {us['mpi']:8.1f} "
                  f"{us['lane']:8.1f} {us['general']:8.1f} {us['lane'] / us['mpi']:9.2f} "
                  f"{us['general'] - us['lane']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
