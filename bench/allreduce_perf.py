"""collectives-bench: time, bandwidth and #wrong per message size and algorithm, beside MPI's own.

The command line of :mod:`bench.harness` over the ops of :mod:`bench.ops` (the all-reduce
by default, ``--collective`` for the others): every run measures MPI's own collective
called straight through mpi4py (``mpi``, the baseline the ratios are taken against) and
the library's algorithms, with the cost model's prediction beside each time.

Example::

    collectives-bench -b 8 -e 64K --repeat 3                         # latency; starts 2 ranks
    collectives-bench -b 1M -e 256M -f 4 --algorithms all --json out.json
    collectives-bench --device gpu --transport nccl --np 1 -b 1M -e 1G -f 4
    mpiexec -n 8 python -m bench.allreduce_perf -b 1M -e 64M -f 4 --columns wide
    collectives-bench -b 1M -e 64M -f 4 --algorithms ring --compression none,fp16,bf16
    collectives-bench --tensors 1000 -b 8M -e 8M --algorithms auto     # fusion: many/loop/flat
    collectives-bench --collective allgather --algorithms mpi -b 1K -e 16M -f 4
    collectives-bench --nodes 2 --ppn 2 --link 1gbit -b 1M -e 64M -f 4  # on a lab (root)
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from bench import environment, harness, launch, ops, table
from bench.arguments import refuse_beyond_memory
from bench.ops.allreduce import AllReduce
from bench.ops.baseline import MPI_BASELINE
from bench.reference import DTYPE_ALIASES, DTYPES, REDOPS, WIRE_EPS

__all__ = ["build_parser", "main"]

_MODULE = "bench.allreduce_perf"
ROOTED = ("broadcast", "reduce")  # the collectives --root is for
# The sweep's flags (each the long option --DEST), which --calibrate does not take: it fits
# the cost model on sizes of its own and writes the tuning file (they were ignored: the
# 84th review).
_SWEEP_ONLY = ("minbytes", "maxbytes", "stepfactor", "stepbytes", "iters", "warmup_iters",
               "check", "repeat", "json", "collective", "algorithms", "dtype", "op", "root",
               "columns", "compression", "tensors", "deterministic", "device", "transport")


def _dtype(text: str) -> str:
    """A dtype name from the command line (nccl-tests' half/float/double too)."""
    name = DTYPE_ALIASES.get(text, text)
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(
            f"unknown dtype {text!r}; choose from {', '.join(DTYPES)}")
    return name


def _compressions(text: str) -> tuple[str | None, ...]:
    """``none,fp16,auto`` as (None, "fp16", "auto"); each named once, none empty (a name
    twice made two column groups summarised as one, an empty one was dropped)."""
    names = text.split(",")
    unknown = [name for name in names if name and name not in ("none", *WIRE_EPS, "auto")]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown compression {', '.join(unknown)}; choose from none, "
            f"{', '.join(WIRE_EPS)}, auto")
    twice = sorted({name for name in names if name and names.count(name) > 1})
    problems = [f"{', '.join(twice)} given twice"] * bool(twice) + ["an empty name"] * ("" in names)
    if problems:
        raise argparse.ArgumentTypeError(f"{text!r}: {'; '.join(problems)}")
    return tuple(None if name == "none" else name for name in names)


def _columns(text: str) -> str:
    try:
        return table.parse_columns(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line: nccl-tests' flags plus collective, algorithms, dtype, op and --np."""
    parser = argparse.ArgumentParser(
        prog="collectives-bench",
        description="Time, algbw, busbw and #wrong per size and algorithm beside MPI's own "
                    "collective, with the cost model's prediction (like nccl-tests' "
                    "all_reduce_perf).")
    harness.add_sweep_arguments(parser)
    parser.add_argument("--collective", choices=ops.COLLECTIVES, default="allreduce",
                        help="what to measure (default allreduce)")
    parser.add_argument("--algorithms", default=None, metavar="A,B",
                        help="comma-separated collectives.ALGORITHMS, 'default' (the "
                             "library's choice; not for allreduce), or 'all'; MPI's own "
                             "collective (mpi) is always measured (default ring,native for "
                             "allreduce, else default)")
    parser.add_argument("-d", "--dtype", type=_dtype, default="float32",
                        help=f"element type: {', '.join(DTYPES)} (default float32)")
    parser.add_argument("-o", "--op", choices=REDOPS, default="sum",
                        help="reduction (default sum)")
    parser.add_argument("-r", "--root", type=int, default=0,
                        help="root rank of broadcast and reduce (default 0)")
    parser.add_argument("--columns", type=_columns, default=None, metavar="COLS",
                        help="cells per algorithm: latency, bandwidth, wide, or a list of "
                             f"{', '.join(table.CELLS)} (default latency below 1 MiB, "
                             "else bandwidth)")
    parser.add_argument("--compression", type=_compressions, default=(None,), metavar="C,C",
                        help="wire compressions to measure, each a column group per "
                             "algorithm: none, fp16, bf16, auto (the library decides per size; "
                             "default none)")
    parser.add_argument("--tensors", type=int, default=None, metavar="N",
                        help="fusion mode: cut each size into N uneven arrays and compare "
                             "allreduce_many (many), one call per array (loop) and one "
                             "all-reduce of the same bytes (flat)")
    parser.add_argument("--deterministic", action="store_true",
                        help="beside each algorithm, the same with deterministic=True "
                             "(label ALG+det): what reproducible bits cost")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="where the buffers live: NumPy (cpu) or CuPy (gpu, GPU = "
                             "node-local rank; no mpi column); default cpu")
    parser.add_argument("--transport", choices=("mpi", "nccl", "auto"), default="mpi",
                        help="collectives.init(transport=...): what moves CuPy arrays "
                             "(default mpi; nccl makes 'native' NCCL's all-reduce)")
    parser.add_argument("--calibrate", action="store_true",
                        help="instead of the sweep, fit the cost model (alpha, beta, gamma, "
                             "native's times) at this np and write the tuning file that "
                             "algorithm='auto' and the predictions read (bench/calibrate.py)")
    parser.add_argument("--quick", action="store_true",
                        help="with --calibrate: fewer sizes")
    launch.add_launch_argument(parser)
    launch.add_lab_arguments(parser)
    return parser


def _usage_problem(args: argparse.Namespace, options: harness.SweepOptions, *,
                   nranks: int | None) -> str | None:
    """What in the arguments cannot work together, before any rank starts (``nranks``:
    the world size where it is known before launch)."""
    if args.calibrate:
        defaults = build_parser().parse_args([])
        given = [f"--{dest}" for dest in _SWEEP_ONLY
                 if getattr(args, dest) != getattr(defaults, dest)]
        if given:
            return (f"{', '.join(given)}: not taken with --calibrate (it fits the cost model "
                    "on sizes of its own and writes the tuning file)")
    if args.dtype.startswith("int") and args.compression != (None,):
        return f"--compression needs a floating-point --dtype, got {args.dtype}"
    if args.compression != (None,) and set((args.algorithms or "").split(",")) == {MPI_BASELINE}:
        return ("--compression: nothing compressed is measured with --algorithms mpi (MPI's own "
                "all-reduce only); name the library's algorithms too")
    if args.quick and not args.calibrate:
        return "--quick goes with --calibrate (fewer sizes to calibrate on)"
    if args.tensors is not None and args.tensors < 1:
        return f"--tensors must be at least 1, got {args.tensors}"
    if options.sizes[-1] < DTYPES[args.dtype].itemsize:
        return (f"nothing to measure: no size from {options.sizes[0]} to {options.sizes[-1]} "
                f"bytes holds one {args.dtype} element")
    if args.tensors is not None and options.sizes[-1] // DTYPES[args.dtype].itemsize < args.tensors:
        return (f"nothing to measure: --tensors {args.tensors} needs messages of at least "
                f"{args.tensors} {args.dtype} elements, and the largest size is "
                f"{options.sizes[-1]} bytes")
    if args.collective != "allreduce" and (args.compression != (None,) or args.tensors
                                           or args.device != "cpu" or args.deterministic):
        return ("--compression, --tensors, --deterministic and --device gpu go with "
                "--collective allreduce")
    blocks = args.collective != "allreduce" and ops.OTHERS[args.collective].blocks_per_rank
    if blocks and nranks is not None and options.sizes[-1] // DTYPES[args.dtype].itemsize < nranks:
        return (f"nothing to measure: --collective {args.collective} needs a {args.dtype} "
                f"element per rank, {nranks * DTYPES[args.dtype].itemsize} bytes on {nranks} "
                f"ranks, and the largest size is {options.sizes[-1]} bytes")
    return None


def _library_algorithms(args: argparse.Namespace, library: Any, *, nranks: int) -> tuple[str, ...]:
    """The library's algorithms to measure beside mpi; ValueError for what this build of
    the library, or these ranks, cannot run."""
    default = "ring,native" if args.collective == "allreduce" else ops.DEFAULT
    algorithms = ops.algorithms_for(args.collective,
                                    default if args.algorithms is None else args.algorithms,
                                    ops.library_algorithms(args.collective))
    if args.device != "cpu" and MPI_BASELINE in (args.algorithms or "").split(","):
        raise ValueError("the mpi column reads host buffers: leave it out with --device gpu")
    if args.collective in ROOTED and not 0 <= args.root < nranks:
        raise ValueError(f"--root {args.root} is not a rank of {nranks}")
    return algorithms


def _use_local_gpu(mpi_comm: Any) -> None:
    """Make GPU (node-local rank mod GPUs) current, as the NCCL transport would pick it."""
    import cupy
    from mpi4py import MPI

    node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    cupy.cuda.Device(node.rank % cupy.cuda.runtime.getDeviceCount()).use()
    node.Free()


def _make_op(args: argparse.Namespace, comm: Any, mpi_comm: Any,
             algorithms: Sequence[str]) -> tuple[Any, str | None]:
    """(the op, the label ratios are taken against): mpi; in --tensors mode the flat
    all-reduce of the first algorithm; native on GPUs (no mpi column there)."""
    dtype = DTYPES[args.dtype]
    if args.collective != "allreduce":
        op = ops.OTHERS[args.collective](comm, mpi_comm, dtype=dtype, redop=args.op,
                                         algorithms=algorithms, root=args.root)
        return op, MPI_BASELINE
    op = AllReduce(comm, mpi_comm, dtype=dtype, redop=args.op, algorithms=algorithms,
                   mpi_baseline=args.device == "cpu", device=args.device,
                   compressions=args.compression, tensors=args.tensors,
                   deterministic=args.deterministic)
    if args.tensors is not None:
        baseline = f"flat {algorithms[0]}" if algorithms else None
    else:
        baseline = MPI_BASELINE if args.device == "cpu" else "native"
    labels = [variant.label for variant in op.variants()]
    return op, baseline if baseline in labels else None


def _config(args: argparse.Namespace, op: Any, options: harness.SweepOptions) -> dict:
    """The settings every row shares, for the header and the JSON."""
    return {"collective": op.name, "dtype": args.dtype,
            **({"op": args.op} if "redop" in op.fields() else {}),
            **({"root": args.root} if "root" in op.fields() else {}),
            "device": args.device, "transport": args.transport,
            "compression": ",".join(c or "none" for c in args.compression),
            **({} if args.tensors is None else {"tensors": args.tensors}),
            "iters": options.iters, "warmup": options.warmup, "repeat": options.repeat,
            "check": args.check}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every check passed, 1 when some element was wrong."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    with launch.agreed_checks(parser):
        args = parser.parse_args(argv)
        try:
            options = harness.sweep_options(args)
        except ValueError as error:
            parser.error(str(error))
        lab = launch.lab_request(parser, args)
        problem = _usage_problem(args, options, nranks=launch.world_size(args.np, lab))
        if problem is not None:
            parser.error(problem)
        refuse_beyond_memory(parser, args.maxbytes, launch.ranks_here(args.np, lab))
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np, lab=lab)

    from mpi4py import MPI

    import collectives

    mpi_comm = MPI.COMM_WORLD
    leader = mpi_comm.rank == 0
    if args.calibrate:
        from bench import calibrate

        problem = mpi_comm.bcast(calibrate.tuning_file_problem() if leader else None)
        if problem is not None:  # (rank 0 writes the file: said before minutes of measuring)
            if leader:
                parser.error(problem)
            return 2
        with environment.abort_on_error(mpi_comm):
            calibrate.run(mpi_comm, quick=args.quick)
        return 0
    try:
        algorithms = _library_algorithms(args, collectives, nranks=mpi_comm.size)
    except ValueError as error:
        if leader:
            parser.error(str(error))
        return 2
    with environment.abort_on_error(mpi_comm):
        if args.device == "gpu":
            _use_local_gpu(mpi_comm)
        # The library's default transport is "mpi"; name it only when another is asked for.
        chosen = {} if args.transport == "mpi" else {"transport": args.transport}
        comm = collectives.init(mpi_comm=mpi_comm, **chosen)
        op, baseline = _make_op(args, comm, mpi_comm, algorithms)
        redraw = sys.stderr.isatty() or os.environ.get(launch.PROGRESS_TTY) == "1"
        rows = harness.run(
            mpi_comm, op, options=options, command=shlex.join(["collectives-bench", *argv]),
            config=_config(args, op, options), baseline=baseline,
            ranks_per_node=[len(node) for node in comm.topology.nodes],
            link_bytes_per_s=launch.link_bytes_per_s(lab), columns=args.columns,
            json_path=args.json,
            env=environment.environment(
                mpi_comm, collectives=getattr(collectives, "__version__", "unknown")),
            progress=table.Progress(stream=sys.stderr, redraw=redraw))
    return 1 if any(row.wrong for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
