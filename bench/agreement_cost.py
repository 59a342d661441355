"""The cost of a call: MPI's own all-reduce, and the library's with the check on and off.

Three cells per size and algorithm, all on the same preallocated buffers (`out=`): `mpi`,
MPI_Allreduce called straight through mpi4py outside the library (what users have today);
`on`, `comm.allreduce` with the agreement check (the default); `off`, with `check=False`.
They run in alternating rounds, so drift on a loaded machine hits all three alike; a cell
is the median over rounds of the slowest rank's mean time per call. `--runs K` repeats the
whole measurement K times and reports the median of the runs' ratios beside each run's.

Example::

    python -m bench.agreement_cost --np 2 --sizes 8,4K --runs 3   # starts 2 ranks itself
    mpiexec -n 2 python -m bench.agreement_cost --sizes 4K,64M --algorithms native,ring
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import numpy as np

from bench import harness, launch, ops
from bench.arguments import positive_int, positive_seconds, refuse_beyond_memory, size_list
from bench.sizes import format_size

__all__ = ["main"]

_MODULE = "bench.agreement_cost"
STATES = ("mpi", "on", "off")


def _float32_sizes(text: str) -> tuple[int, ...]:
    """:func:`size_list`, each size a whole number of float32 elements (6 bytes was
    measured as 4, 1 byte as 4)."""
    sizes = size_list(text)
    odd = [size for size in sizes if size % 4]
    if odd:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(str, odd))} bytes in {text!r}: not a whole number of float32 "
            "elements (4 bytes each)")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.agreement_cost",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_float32_sizes, default="8,4K,64K,64M",
                        help="message sizes (default 8,4K,64K,64M)")
    parser.add_argument("--algorithms", default="auto",
                        help="comma-separated collectives.ALGORITHMS of all-reduce, or 'all' "
                             "(default auto)")
    parser.add_argument("--rounds", type=positive_int, default=7,
                        help="alternating rounds (default 7)")
    parser.add_argument("--runs", type=positive_int, default=1,
                        help="whole measurements; the table gives their median (default 1)")
    parser.add_argument("--budget", type=positive_seconds, default=0.3,
                        help="seconds per cell and round, which sets the iterations (default 0.3)")
    launch.add_launch_argument(parser, default=2)
    return parser


def measure(mpi, comms: dict, algorithm: str, nbytes: int, rounds: int,
            budget: float) -> dict[str, float]:
    """Seconds per call of each state: the median over alternating rounds."""
    from mpi4py import MPI

    x = np.ones(nbytes // 4, np.float32)
    out = np.empty_like(x)
    raw = comms["mpi"]
    calls = {"mpi": lambda: raw.Allreduce(x, out, MPI.SUM),
             **{state: (lambda c=comms[state]: c.allreduce(x, algorithm=algorithm, out=out,
                                                          deterministic=False))
                for state in ("on", "off")}}
    return harness.alternating_medians(mpi, calls, rounds=rounds, budget=budget, probe="on")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    with launch.agreed_checks(parser):
        args = parser.parse_args(argv)
        try:
            algorithms = ops.algorithms_for("allreduce", args.algorithms,
                                            ops.library_algorithms("allreduce"))
        except ValueError as error:
            parser.error(str(error))
        if not algorithms:
            parser.error(f"--algorithms {args.algorithms!r}: mpi is always measured; name the "
                         "library's algorithms to measure beside it")
        refuse_beyond_memory(parser, max(args.sizes), launch.ranks_here(args.np, None),
                             flag="--sizes")
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np)
    from mpi4py import MPI

    import collectives

    mpi = MPI.COMM_WORLD
    comms = {"mpi": mpi.Dup(), "on": collectives.init(check=True),
             "off": collectives.init(check=False)}
    cells = [(algorithm, nbytes) for algorithm in algorithms for nbytes in args.sizes]
    runs: dict[tuple, list[dict[str, float]]] = {cell: [] for cell in cells}
    for run in range(args.runs):
        for algorithm, nbytes in cells:
            runs[algorithm, nbytes].append(
                measure(mpi, comms, algorithm, nbytes, args.rounds, args.budget))
            if mpi.rank == 0:
                print(f"# [run {run + 1}/{args.runs}] {format_size(nbytes)} {algorithm}",
                      file=sys.stderr, flush=True)
    if mpi.rank == 0:
        print(f"# cost of a call: {mpi.size} ranks, float32 sum, out= given, {args.rounds} "
              f"alternating rounds x {args.runs} run(s); times: median of the runs' medians")
        print(f"# {'size':>9}  {'algorithm':>10}  {'mpi us':>8}  {'on us':>8}  {'off us':>8}  "
              f"{'on/mpi':>7}  {'off/mpi':>7}  {'on/mpi per run':>22}  {'off/mpi per run':>22}")
        for cell in cells:
            results = runs[cell]
            t = {s: statistics.median(r[s] for r in results) for s in STATES}
            ratios = {s: [r[s] / r["mpi"] for r in results] for s in ("on", "off")}
            per_run = {s: " ".join(f"{v:.2f}" for v in ratios[s]) for s in ratios}
            print(f"  {format_size(cell[1]):>9}  {cell[0]:>10}  {t['mpi'] * 1e6:8.2f}  "
                  f"{t['on'] * 1e6:8.2f}  {t['off'] * 1e6:8.2f}  "
                  f"{statistics.median(ratios['on']):7.2f}  "
                  f"{statistics.median(ratios['off']):7.2f}  {per_run['on']:>22}  "
                  f"{per_run['off']:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
