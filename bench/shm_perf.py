"""All-reduce with on-node exchange through shared memory and through MPI, side by side.

The all-reduce benchmark of :mod:`bench.allreduce_perf`, with every algorithm measured
twice in the same run: ``ALG/shm`` (ranks on a node read each other's data from MPI-3
shared windows, ``COLLECTIVES_SHM=1``) and ``ALG/mpi`` (``COLLECTIVES_SHM=0``: MPI send/recv), next
to ``native`` (MPI_Allreduce), the baseline here: ``mpi`` names the exchange. Same flags,
columns and checks as collectives-bench, of its flags those of an all-reduce sweep on one
machine (the others, such as --compression or --nodes, are refused).

Example::

    python -m bench.shm_perf --np 2 -b 1M -e 64M -f 4 --algorithms ring,hierarchical,native
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import environment, harness, launch, ops, table
from bench.allreduce_perf import build_parser
from bench.arguments import refuse_beyond_memory
from bench.ops.allreduce import AllReduce, AllReduceSample, AllReduceVariant
from bench.reference import DTYPES

__all__ = ["ExchangeVariant", "main"]

_MODULE = "bench.shm_perf"
# collectives-bench's flags this tool does not apply (they were accepted and ignored: the
# sixty-ninth review)
_NOT_TAKEN = ("collective", "root", "compression", "tensors", "deterministic", "device",
              "transport", "calibrate", "quick", "nodes", "ppn", "link", "lab_timeout")


@dataclass(frozen=True)
class ExchangeVariant(AllReduceVariant):
    """A column group: an algorithm and how ranks on one node exchange (shm or MPI)."""

    shm: bool = True

    @property
    def label(self) -> str:
        """``ring/shm``, ``ring/mpi``; just ``native`` for MPI's own all-reduce."""
        if self.algorithm == "native":
            return "native"
        return f"{self.algorithm}/{'shm' if self.shm else 'mpi'}"

    def fields(self) -> Mapping[str, object]:
        """``{"algorithm": name, "compression": None, "shm": bool}`` for the JSON rows."""
        return {**super().fields(), "shm": self.shm}


class _Sample(AllReduceSample):
    """An all-reduce sample that runs each variant on the communicator of its exchange."""

    def __init__(self, comms: Mapping[bool, Any], mpi_comm: Any, **kwargs: Any) -> None:
        super().__init__(comms[True], mpi_comm, **kwargs)
        self._comms = comms

    def run(self, variant: ExchangeVariant) -> None:
        """One all-reduce into the preallocated output."""
        self._comms[variant.shm].allreduce(self._x, op=self._redop, algorithm=variant.algorithm,
                                           out=self._out, deterministic=False)  # (as labelled)


class ExchangeAllReduce(AllReduce):
    """The all-reduce op with an shm and an MPI variant of every algorithm but native."""

    def __init__(self, comms: Mapping[bool, Any], mpi_comm: Any, *, algorithms: Sequence[str],
                 **kwargs: Any):
        super().__init__(comms[True], mpi_comm, algorithms=algorithms, mpi_baseline=False,
                         **kwargs)
        self._comms = comms
        self._variants = tuple(
            ExchangeVariant(name, shm=shm)
            for name in algorithms for shm in ((True,) if name == "native" else (True, False)))

    def setup(self, count: int) -> _Sample:
        """Buffers and reference for ``count`` elements."""
        return _Sample(self._comms, self._mpi_comm, count=count, dtype=self._dtype,
                       redop=self._redop)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every check passed, 1 when some element was wrong."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.prog = "python -m bench.shm_perf"
    with launch.agreed_checks(parser):
        args = parser.parse_args(argv)
        defaults = parser.parse_args([])
        given = [f"--{dest.replace('_', '-')}" for dest in _NOT_TAKEN
                 if getattr(args, dest) != getattr(defaults, dest)]
        if given:
            parser.error(f"{', '.join(given)}: not taken here (an all-reduce sweep on one "
                         "machine); use collectives-bench")
        try:
            options = harness.sweep_options(args)
            algorithms = ops.algorithms_for("allreduce", args.algorithms or "ring,native",
                                            ops.library_algorithms("allreduce"))
        except ValueError as error:
            parser.error(str(error))
        if not algorithms:  # (was a ZeroDivisionError on every rank: the 84th review)
            parser.error(f"--algorithms {args.algorithms!r}: mpi is always measured (the "
                         "exchange); name the library's algorithms to measure")
        refuse_beyond_memory(parser, args.maxbytes, launch.ranks_here(args.np, None))
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np)

    from mpi4py import MPI

    import collectives

    mpi_comm = MPI.COMM_WORLD
    with environment.abort_on_error(mpi_comm):
        os.environ["COLLECTIVES_SHM"] = "1"
        shm = collectives.init(mpi_comm=mpi_comm)
        os.environ["COLLECTIVES_SHM"] = "0"
        comms = {True: shm, False: collectives.init(mpi_comm=mpi_comm)}
        op = ExchangeAllReduce(comms, mpi_comm, dtype=DTYPES[args.dtype], redop=args.op,
                               algorithms=algorithms)
        rows = harness.run(
            mpi_comm, op, options=options,
            command=shlex.join(["python", "-m", _MODULE, *argv]),
            config={"collective": op.name, "dtype": args.dtype, "op": args.op,
                    "iters": options.iters, "warmup": options.warmup, "repeat": options.repeat,
                    "check": args.check},
            baseline="native" if "native" in algorithms else None, ranks_per_node=[len(node) for node in shm.topology.nodes],
            columns=args.columns, json_path=args.json,
            env=environment.environment(mpi_comm, collectives=collectives.__version__),
            progress=table.Progress(stream=sys.stderr, redraw=False))
    return 1 if any(row.wrong for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
