"""The collectives-report command: measure, hold the model against it, predict, write.

Example::

    collectives-report --quick --out OUT                 # starts 2 ranks itself
    collectives-report --np 4 --out OUT --cluster my-clusters.json
    collectives-report --accuracy-only --np 4 --out OUT  # model vs measurement only
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import environment, harness, launch, table
from bench.arguments import refuse_beyond_memory
from bench.report.clusters import default_clusters, load_clusters
from bench.report.markdown import write_markdown
from bench.report.measure import ACCURACY_SIZES, measure_accuracy, measure_sweep, sweep_op
from bench.report.model import accuracy, at_scale, auto_runs, winners
from bench.report.plots import plot_accuracy, plot_busbw, plot_scale, plot_winners
from bench.report.results import write_results
from bench.sizes import parse_size, size_steps
from collectives.files import read_regular, special_file

__all__ = ["build_parser", "main"]

_MODULE = "bench.report"
MIN_BYTES = 8  # the sweep's smallest message
CLUSTER_MAX_BYTES = 1 << 20  # a --cluster file: a few cluster shapes
_TWO_RANKS = "collectives-report needs at least 2 ranks (--np 2 or more)"
PLOTS = ("busbw.png", "winners.png", "accuracy.png", "at_scale.png")
ACCURACY_PLOTS = ("accuracy.png",)  # --accuracy-only


def build_parser() -> argparse.ArgumentParser:
    """--out, --quick, --cluster, --max-bytes, --accuracy-only, --np and the lab's options."""
    parser = argparse.ArgumentParser(
        prog="collectives-report",
        description="Measure every all-reduce algorithm beside MPI's own, compare with the "
                    "cost model, predict at scale; writes report.md, results.json and PNG plots.")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes and iterations (about 2 minutes on a small host)")
    parser.add_argument("--cluster", metavar="FILE",
                        help="JSON with the cluster shapes to predict (default: built-in shapes)")
    parser.add_argument("--max-bytes", type=parse_size, default=None, metavar="SIZE",
                        help="largest measured message (default 256M, 16M with --quick; the "
                             "model-vs-measurement points go to 64M unless this is smaller); "
                             "the calibration taken with those points is a whole one, as the "
                             "tuning file keeps it: 64 B .. 64M, native's table to 128M")
    parser.add_argument("--accuracy-only", action="store_true",
                        help="only the model-vs-measurement section (no sweep, no at-scale)")
    launch.add_launch_argument(parser)
    launch.add_lab_arguments(parser)
    return parser


def _accuracy_sizes(args: argparse.Namespace) -> tuple[int, ...]:
    """ACCURACY_SIZES up to --max-bytes (or the smallest, if that is below them all)."""
    top = args.max_bytes or ACCURACY_SIZES[-1]
    return tuple(s for s in ACCURACY_SIZES if s <= top) or ACCURACY_SIZES[:1]


def _sizes(args: argparse.Namespace) -> tuple[tuple[int, ...], harness.SweepOptions]:
    """(at-scale sizes, the sweep's options) for the mode."""
    top = args.max_bytes or ((16 << 20) if args.quick else (256 << 20))
    measured = size_steps(min_bytes=MIN_BYTES, max_bytes=top, factor=8 if args.quick else 4)
    measured += (top,) if measured[-1] != top else ()
    scale = size_steps(min_bytes=64 << 10, max_bytes=256 << 20, factor=64 if args.quick else 4)
    options = harness.SweepOptions(sizes=measured, iters=5 if args.quick else 10,
                                   warmup=1 if args.quick else 3)
    return scale, options


def _largest(args: argparse.Namespace) -> int:
    """The largest message a rank holds: the sweep's (unless --accuracy-only), the points',
    the calibration's native table (128 MiB whatever --max-bytes)."""
    from bench.calibrate import NATIVE_SIZES

    swept = () if args.accuracy_only else _sizes(args)[1].sizes
    return max(NATIVE_SIZES[-1], *_accuracy_sizes(args), *swept)


def _plots(args: argparse.Namespace) -> tuple[str, ...]:
    """The PNGs the report writes."""
    return ACCURACY_PLOTS if args.accuracy_only else PLOTS


def _outputs(args: argparse.Namespace) -> tuple[str, ...]:
    """The files the report writes into --out (results.json through results.json.tmp)."""
    return ("report.md", "results.json", "results.json.tmp", *_plots(args))


def _steps(stage: str) -> Callable[[str], None]:
    """A progress callback writing each step of ``stage`` as a line on stderr."""
    def step(what: str) -> None:
        print(f"{stage}: {what}", file=sys.stderr, flush=True)

    return step


def _tuning_entry(size: int):
    """(calibration, source) of this np from the tuning file, or (None, None) once the file
    is found able to take the calibration the report then writes (check_tuning_file)."""
    from collectives.costmodel import check_tuning_file, read_tuning

    entry = read_tuning().get(size)
    if entry is None:
        check_tuning_file()
    return (entry, f"tuning file, np={size}") if entry else (None, None)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report; 0 when every result was right, 1 when any was wrong."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    with launch.agreed_checks(parser):
        args = parser.parse_args(argv)
        try:
            shapes = (load_clusters(json.loads(read_regular(Path(args.cluster),
                                                            CLUSTER_MAX_BYTES)))
                      if args.cluster else default_clusters())
        except (OSError, ValueError, RecursionError) as error:
            parser.error(f"--cluster {args.cluster}: {error}")
        if args.max_bytes is not None and args.max_bytes < MIN_BYTES:
            parser.error(f"--max-bytes must be at least {MIN_BYTES} bytes (the smallest size "
                         f"measured), got {args.max_bytes}")
        lab = launch.lab_request(parser, args)
        nranks = launch.world_size(args.np, lab)
        if nranks is not None and nranks < 2:  # (else said by the ranks, below)
            parser.error(f"{_TWO_RANKS}, got {nranks}")
        refuse_beyond_memory(parser, _largest(args), launch.ranks_here(args.np, lab),
                             flag="--max-bytes")
        out = Path(args.out)
        if not args.out:  # (Path("") is the current folder, its report.md replaced)
            parser.error("--out is empty: name a folder (made if missing)")
        if out.exists() and not out.is_dir():
            parser.error(f"--out {args.out} is a file: name a folder (made if missing)")
        blocked = next(((name, kind) for name in _outputs(args)
                        if (kind := special_file(out / name))), None)
        if blocked:
            parser.error(f"--out {args.out}: {blocked[0]} there is not a plain file but "
                         f"{blocked[1]} (the report writes it): move it away or name another "
                         "folder")
        try:  # made here: a folder that cannot be made is refused before any rank starts
            out.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=out).close()
        except OSError as error:
            parser.error(f"--out {args.out}: cannot write there ({error.strerror or error})")
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np, lab=lab)

    from mpi4py import MPI

    import collectives
    from collectives.costmodel import write_calibration

    mpi_comm = MPI.COMM_WORLD
    leader = mpi_comm.rank == 0
    started = time.perf_counter()
    rows: list[harness.Row] = []
    with environment.abort_on_error(mpi_comm):
        if mpi_comm.size < 2:
            raise ValueError(f"{_TWO_RANKS}, got {mpi_comm.size}")
        out_dir = Path(args.out)
        if leader:
            out_dir.mkdir(parents=True, exist_ok=True)
        redraw = sys.stderr.isatty() or os.environ.get(launch.PROGRESS_TTY) == "1"
        progress = table.Progress(stream=sys.stderr, redraw=redraw)
        env = environment.environment(mpi_comm, collectives=collectives.__version__)
        comm = collectives.init(mpi_comm=mpi_comm)
        # rank 0's view of the tuning file (it may write it below), read before minutes of
        # measuring so that an unreadable file stops the report at once
        calibration, source = mpi_comm.bcast(_tuning_entry(mpi_comm.size) if leader else None)
        accuracy_calibration, measured = measure_accuracy(
            mpi_comm, comm, _accuracy_sizes(args), quick=args.quick,
            progress=_steps("model vs measurement") if leader else lambda what: None)
        if calibration is None:  # this np's first calibration: keep it for auto and later runs
            calibration, source = accuracy_calibration, f"calibrated now, np={mpi_comm.size}"
            if leader:
                write_calibration(calibration, transport=comm.transport_name,
                                  host=env["hostname"], date=env["date"])
            mpi_comm.Barrier()
            comm = collectives.init(mpi_comm=mpi_comm)  # auto and predictions read the new entry
        scale_sizes, options = _sizes(args)
        if not args.accuracy_only:
            rows = measure_sweep(mpi_comm, sweep_op(comm, mpi_comm, collectives.ALGORITHMS),
                                 options=options,
                                 ranks_per_node=[len(node) for node in comm.topology.nodes],
                                 progress=progress if leader else None)
        if not leader:
            return 0
        scale = [] if args.accuracy_only else at_scale(shapes, scale_sizes, progress=progress)
        progress.close()
        _write(out_dir, args=args, argv=argv, env=env, calibration=calibration, source=source,
               accuracy_calibration=accuracy_calibration, comm=comm, rows=rows,
               measured=measured, options=options, scale=scale,
               elapsed=time.perf_counter() - started)
        print(f"wrote {out_dir / 'report.md'}, results.json and plots")
    return 1 if any(row.wrong for row in rows) else 0


def _write(out_dir: Path, *, args, argv, env, calibration, source, accuracy_calibration, comm,
           rows, measured, options, scale, elapsed: float) -> None:
    """results.json (first: a plot that failed lost the measurements), the plots and
    report.md (rank 0)."""
    model = calibration.cluster(comm.topology, name="this machine")
    best = winners(rows, auto_runs(comm))
    points = accuracy(measured, accuracy_calibration.cluster(comm.topology, name="this machine"))
    file_points = None if calibration is accuracy_calibration else accuracy(measured, model)
    plots = list(_plots(args))
    command = shlex.join(["collectives-report", *argv])
    config = {"collective": "allreduce", "dtype": "float32", "op": "sum", "iters": options.iters,
              "warmup": options.warmup, "check": 1, "quick": args.quick}
    write_results(out_dir / "results.json", command=command, env=env, config=config,
                  calibration=calibration, source=source,
                  accuracy_calibration=accuracy_calibration, rows=rows, winners=best,
                  points=points, file_points=file_points, scale=scale)
    plot_accuracy(points, out_dir / "accuracy.png", np_=comm.size)
    if rows:
        plot_busbw(rows, out_dir / "busbw.png", np_=comm.size)
        plot_winners(best, out_dir / "winners.png", np_=comm.size)
    if scale:
        plot_scale(scale, out_dir / "at_scale.png")
    write_markdown(out_dir / "report.md", command=command, env=env,
                   accuracy_calibration=accuracy_calibration, source=source, rows=rows,
                   winners=best, points=points, file_points=file_points, scale=scale,
                   plots=plots, elapsed=elapsed)
