"""The benchmark harness: sizes, warm-up, timing, #wrong checks, algbw/busbw, table, JSON.

It follows nccl-tests (``src/common.cu``): the harness owns everything around the
measured call, and each measured operation (an :class:`Op`) supplies only five things —
its name and row fields, bytes -> element count, data initialisation (and the reference
check) in :meth:`Op.setup`, its bus bandwidth factor, and the call itself
(:meth:`Sample.run`). Nothing here knows what an all-reduce is.

An op offers *variants* (the table's column groups: algorithms, later algorithm x
compression). Per size, every variant is measured before the next size, so drift in the
machine hits all of them alike.

Example::

    options = SweepOptions(sizes=size_steps(min_bytes=8, max_bytes=1 << 20, factor=2))
    rows = run(mpi_comm, op, options=options, command="my-bench -b 8 -e 1M",
               config={"op": op.name}, baseline="native")
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import platform
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = [
    "Op", "Progress", "Row", "Sample", "SweepOptions", "Variant", "abort_on_error",
    "add_sweep_arguments", "bandwidth", "count_wrong", "environment", "format_size",
    "header_lines", "measure", "parse_size", "run", "size_steps", "summary_lines", "sweep",
    "sweep_options", "table_header", "table_line", "time_per_iteration", "write_json",
]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+)\s*([KMGT]?)(I?B)?\s*", re.IGNORECASE)
# Sizes at which the summary compares each variant with the baseline.
PROBE_SIZES = (1 << 20, 16 << 20, 64 << 20)


# ---------------------------------------------------------------------------- sizes

def parse_size(text: str) -> int:
    """Bytes from an nccl-tests size: ``8``, ``1K``, ``16M``, ``256M``, ``1G`` (powers of 1024).

    >>> parse_size("16M")
    16777216
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 8, 1K, 16M, 1G)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def size_steps(*, min_bytes: int, max_bytes: int, factor: int | None = None,
               increment: int | None = None) -> tuple[int, ...]:
    """Message sizes from ``min_bytes`` to ``max_bytes``: times ``factor``, or plus ``increment``.

    >>> size_steps(min_bytes=8, max_bytes=64, factor=2)
    (8, 16, 32, 64)
    """
    if (factor is None) == (increment is None):
        raise ValueError("give exactly one of factor (-f) and increment (-i)")
    if min_bytes < 1 or max_bytes < min_bytes:
        raise ValueError(f"need 1 <= min bytes <= max bytes, got {min_bytes} and {max_bytes}")
    if factor is not None and factor < 2:
        raise ValueError(f"the step factor must be at least 2, got {factor}")
    if increment is not None and increment < 1:
        raise ValueError(f"the step increment must be at least 1 byte, got {increment}")
    sizes = []
    size = min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size = size * factor if factor is not None else size + increment
    return tuple(sizes)


def format_size(nbytes: int) -> str:
    """A short human size: ``8 B``, ``1 KiB``, ``1.5 MiB``, ``256 MiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


# ---------------------------------------------------------------------------- the op contract

class Variant(Protocol):
    """One column group of the table (e.g. an algorithm)."""

    @property
    def label(self) -> str:
        """Column header, short (``ring``, later ``ring+fp16``)."""

    def fields(self) -> Mapping[str, object]:
        """JSON fields naming the variant in a row (``{"algorithm": "ring"}``)."""


class Sample(Protocol):
    """An op's buffers for one message size, shared by all variants at that size.

    ``run`` must leave the same result however often it is called (an out-of-place call),
    so the output of the timed iterations can be checked.
    """

    @property
    def nbytes(self) -> int:
        """Bytes the op moves per call, as counted for algbw."""

    def run(self, variant: Any) -> None:
        """The measured call, once."""

    def wrong(self, variant: Any) -> int:
        """How many result elements on this rank differ from the reference (after ``run``)."""

    def result(self) -> np.ndarray:
        """The output on the host, 1-D: compared bit for bit across ranks."""

    # Optional: ``synchronize()``, waiting for the device work ``run`` launched (GPU samples).


class Op(Protocol):
    """A measured operation: what nccl-tests' per-collective file supplies."""

    name: str

    def variants(self) -> Sequence[Variant]:
        """The column groups, measured in this order at every size."""

    def fields(self) -> Mapping[str, object]:
        """JSON fields common to every row (``{"type": "float32", "redop": "sum"}``)."""

    def count(self, nbytes: int) -> int:
        """Elements for a message of ``nbytes`` (0: the size is skipped)."""

    def bus_factor(self, nranks: int) -> float:
        """busbw / algbw: the share of the data each rank's link must carry."""

    def setup(self, count: int) -> Sample:
        """Allocate and initialise the buffers for ``count`` elements."""


# ---------------------------------------------------------------------------- measuring

@dataclass(frozen=True)
class SweepOptions:
    """What to measure: message sizes in bytes, iterations, and whether to check results."""

    sizes: tuple[int, ...]
    iters: int = 20
    warmup: int = 5
    check: bool = True

    def __post_init__(self) -> None:
        if self.iters < 1 or self.warmup < 0:
            raise ValueError(f"need iters >= 1 and warmup >= 0, got {self.iters}, {self.warmup}")


@dataclass(frozen=True)
class Row:
    """One variant at one size: a cell group of the table, a row of the JSON."""

    size: int
    count: int
    label: str
    fields: Mapping[str, object]
    time_us: float
    algbw: float
    busbw: float
    wrong: int | None  # None when not checked

    def as_json(self) -> dict[str, object]:
        """This row as JSON: size, count, op and variant fields, time_us, algbw, busbw, wrong."""
        return {"size": self.size, "count": self.count, **self.fields,
                "time_us": self.time_us, "algbw": self.algbw, "busbw": self.busbw,
                "wrong": self.wrong}


def bandwidth(nbytes: int, seconds: float, bus_factor: float) -> tuple[float, float]:
    """(algbw, busbw) in GB/s (1e9 B/s): algbw = bytes / time, busbw = algbw * bus_factor.

    >>> bandwidth(4_000_000_000, 2.0, 2 * (4 - 1) / 4)
    (2.0, 3.0)
    """
    algbw = nbytes / seconds / 1e9 if seconds > 0 else 0.0
    return algbw, algbw * bus_factor


def time_per_iteration(mpi_comm: MPI.Comm, call: Callable[[], None], *, iters: int,
                       warmup: int, synchronize: Callable[[], None] | None = None) -> float:
    """Seconds per call: warm up, barrier, time ``iters`` calls; the slowest rank's mean.

    ``synchronize`` (a sample's, for device work that runs asynchronously) is called after
    the warm-up and before the clock stops, so the time covers the work, not its launch.
    """
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        call()
    sync()
    mpi_comm.Barrier()
    start = time.perf_counter()
    for _ in range(iters):
        call()
    sync()
    mean = (time.perf_counter() - start) / iters
    return max(mpi_comm.allgather(mean))


def count_wrong(mpi_comm: MPI.Comm, sample: Sample, variant: Variant) -> int:
    """#wrong: the most elements any rank got wrong, against the reference or against rank 0.

    Each rank checks its result with ``sample.wrong``; then a digest of every rank's
    result bits is compared, and where one differs from rank 0's, rank 0's result is
    broadcast and the differing elements are counted as wrong too.
    """
    local = sample.wrong(variant)
    result = sample.result()
    digests = mpi_comm.allgather(hashlib.blake2b(result.view(np.uint8), digest_size=16).digest())
    if any(digest != digests[0] for digest in digests):
        local = max(local, _differs_from_root(mpi_comm, result))
    return max(mpi_comm.allgather(local))


def _differs_from_root(mpi_comm: MPI.Comm, result: np.ndarray) -> int:
    """How many elements of ``result`` differ in their bits from rank 0's."""
    root = result.copy() if mpi_comm.rank == 0 else np.empty_like(result)
    mpi_comm.Bcast(root.view(np.uint8), root=0)
    mine = result.view(np.uint8).reshape(-1, result.itemsize)
    theirs = root.view(np.uint8).reshape(-1, result.itemsize)
    return int(np.count_nonzero((mine != theirs).any(axis=1)))


def measure(mpi_comm: MPI.Comm, sample: Sample, variant: Variant, *, bus_factor: float,
            options: SweepOptions, count: int, fields: Mapping[str, object]) -> Row:
    """Time one variant on one sample, check it if asked, and make its row."""
    seconds = time_per_iteration(mpi_comm, functools.partial(sample.run, variant),
                                 iters=options.iters, warmup=options.warmup,
                                 synchronize=getattr(sample, "synchronize", None))
    wrong = count_wrong(mpi_comm, sample, variant) if options.check else None
    algbw, busbw = bandwidth(sample.nbytes, seconds, bus_factor)
    return Row(size=sample.nbytes, count=count, label=variant.label,
               fields={**fields, **variant.fields()}, time_us=seconds * 1e6, algbw=algbw,
               busbw=busbw, wrong=wrong)


def _counts(op: Op, sizes: Sequence[int]) -> list[int]:
    """Element counts for the sizes, without sizes below one element and without repeats."""
    counts: list[int] = []
    for size in sizes:
        count = op.count(size)
        if count > 0 and count not in counts:
            counts.append(count)
    return counts


def sweep(mpi_comm: MPI.Comm, op: Op, *, options: SweepOptions,
          progress: Callable[[int, int, str], None] | None = None) -> Iterator[list[Row]]:
    """Measure every variant at every size; yields one table line (a list of rows) per size.

    ``progress(done, total, what)`` is called before each measurement.
    """
    variants = op.variants()
    counts = _counts(op, options.sizes)
    bus_factor = op.bus_factor(mpi_comm.size)
    total = len(counts) * len(variants)
    step = 0
    for count in counts:
        sample = op.setup(count)
        line = []
        for variant in variants:
            step += 1
            if progress is not None:
                progress(step, total, f"{format_size(sample.nbytes)} {variant.label}")
            line.append(measure(mpi_comm, sample, variant, bus_factor=bus_factor,
                                options=options, count=count, fields=op.fields()))
        yield line


# ---------------------------------------------------------------------------- output

_SIZE_W, _COUNT_W = 12, 12
_TIME_W, _BW_W, _WRONG_W = 10, 8, 7
_GROUP_W = _TIME_W + 2 * _BW_W + _WRONG_W


def table_header(labels: Sequence[str]) -> list[str]:
    """The table's three header lines: variant names over their columns, names, units."""
    lead = "#" + " " * (_SIZE_W + _COUNT_W - 1)
    names = (f"#{'size':>{_SIZE_W - 1}}{'count':>{_COUNT_W}}"
             + "".join(f" |{'time':>{_TIME_W}}{'algbw':>{_BW_W}}{'busbw':>{_BW_W}}"
                       f"{'#wrong':>{_WRONG_W}}" for _ in labels))
    units = (f"#{'(B)':>{_SIZE_W - 1}}{'(elements)':>{_COUNT_W}}"
             + "".join(f" |{'(us)':>{_TIME_W}}{'(GB/s)':>{_BW_W}}{'(GB/s)':>{_BW_W}}"
                       f"{'':>{_WRONG_W}}" for _ in labels))
    groups = lead + "".join(f" |{label:^{_GROUP_W}}" for label in labels)
    return [groups.rstrip(), names, units.rstrip()]


def table_line(rows: Sequence[Row]) -> str:
    """One table line: size and count, then time, algbw, busbw, #wrong of each variant."""
    cells = [f"{rows[0].size:>{_SIZE_W}}{rows[0].count:>{_COUNT_W}}"]
    for row in rows:
        wrong = "N/A" if row.wrong is None else str(row.wrong)
        cells.append(f"{row.time_us:>{_TIME_W}.1f}{row.algbw:>{_BW_W}.2f}"
                     f"{row.busbw:>{_BW_W}.2f}{wrong:>{_WRONG_W}}")
    return " |".join(cells)


def summary_lines(rows: Sequence[Row], *, labels: Sequence[str],
                  baseline: str | None = None) -> list[str]:
    """A line per variant: average busbw and, against ``baseline``, busbw ratios at 1M, 16M, 64M.

    Where the sweep measured none of those sizes, the ratio is given at its largest size.
    """
    by_label = {label: {row.size: row for row in rows if row.label == label} for label in labels}
    sizes = sorted({row.size for row in rows})
    probes = [size for size in PROBE_SIZES if size in sizes] or sizes[-1:]
    width = max(len(label) for label in labels)
    lines = []
    for label in labels:
        measured = by_label[label].values()
        average = sum(row.busbw for row in measured) / max(len(measured), 1)
        line = f"# {label:<{width}}  avg busbw {average:8.2f} GB/s"
        if baseline is not None and label != baseline and baseline in by_label:
            ratios = ", ".join(
                f"{format_size(size)} {_ratio(by_label[label][size], by_label[baseline][size])}"
                for size in probes)
            line += f"   {label}/{baseline} busbw at {ratios}"
        lines.append(line)
    checked = [row.wrong for row in rows if row.wrong is not None]
    if checked:
        total = sum(checked)
        lines.append(f"# #wrong total: {total} {'OK' if total == 0 else 'FAILED'}")
    return lines


def _ratio(row: Row, base: Row) -> str:
    """``row``'s busbw over ``base``'s, as ``1.02x`` (``n/a`` when the base is 0)."""
    return f"{row.busbw / base.busbw:.2f}x" if base.busbw > 0 else "n/a"


def header_lines(*, command: str, env: Mapping[str, Any],
                 config: Mapping[str, object]) -> list[str]:
    """The lines before the table: the command, the ranks and MPI library, the op's settings."""
    hosts = env["hosts"]
    return [
        f"# {command}",
        f"# np {env['nranks']} on {hosts} host{'s' if hosts != 1 else ''}"
        f"  {env['mpi_library']}  mpi4py {env['mpi4py']}  numpy {env['numpy']}",
        "# " + "  ".join(f"{key} {value}" for key, value in config.items()),
    ]


class Progress:
    """Sweep progress on a stream (stderr), ``[12/24] 4 MiB ring``.

    With ``redraw`` (a terminal) each step ends in a carriage return instead of a newline,
    so the next step, or the next table line on stdout, writes over it.
    """

    def __init__(self, *, stream: IO[str], redraw: bool) -> None:
        self._stream = stream
        self._redraw = redraw

    def __call__(self, done: int, total: int, what: str) -> None:
        if total < 2:  # a single measurement is no sweep
            return
        text = f"[{done}/{total}] {what}"
        self._stream.write(f"\r\033[K{text}\r" if self._redraw else text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Erase the last step (redraw mode)."""
        if self._redraw:
            self._stream.write("\r\033[K")
            self._stream.flush()


def environment(mpi_comm: MPI.Comm, **extra: object) -> dict[str, object]:
    """What the numbers depend on: ranks, hosts, MPI library, Python and package versions."""
    import mpi4py
    from mpi4py import MPI

    hostnames = mpi_comm.allgather(socket.gethostname())
    return {
        "nranks": mpi_comm.size,
        "hosts": len(set(hostnames)),
        "hostname": hostnames[0],
        "mpi_library": " ".join(MPI.Get_library_version().split("\n")[0].split()),
        "mpi_standard": "%d.%d" % MPI.Get_version(),
        "mpi4py": mpi4py.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "collectives_env": {key: value for key, value in os.environ.items()
                            if key.startswith("COLLECTIVES_")
                            and not key.startswith("COLLECTIVES_BENCH_")},
        **extra,
    }


def write_json(path: str, document: Mapping[str, object]) -> None:
    """Write ``document`` to ``path`` atomically (through ``path.tmp``)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=1)
        stream.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def abort_on_error(mpi_comm: MPI.Comm) -> Iterator[None]:
    """Abort every rank when one raises, so the others do not wait for it forever."""
    try:
        yield
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        mpi_comm.Abort(1)


def run(mpi_comm: MPI.Comm, op: Op, *, options: SweepOptions, command: str,
        config: Mapping[str, object], baseline: str | None = None, json_path: str | None = None,
        env: Mapping[str, object] | None = None, out: IO[str] = sys.stdout,
        progress: Progress | None = None) -> list[Row]:
    """A whole benchmark: header, a table line per size as it is measured, summary, JSON.

    Every rank measures; rank 0 prints to ``out``, reports ``progress`` and writes JSON.
    """
    env = dict(env or environment(mpi_comm))
    leader = mpi_comm.rank == 0
    labels = [variant.label for variant in op.variants()]
    if leader:
        _print(out, header_lines(command=command, env=env, config=config) + table_header(labels))
    rows: list[Row] = []
    for line in sweep(mpi_comm, op, options=options, progress=progress if leader else None):
        rows += line
        if leader:
            _print(out, [table_line(line)])
    if leader:
        if progress is not None:
            progress.close()
        _print(out, summary_lines(rows, labels=labels, baseline=baseline))
        if json_path is not None:
            write_json(json_path, {"command": command, "environment": env, "config": dict(config),
                                   "rows": [row.as_json() for row in rows]})
    return rows


def _print(out: IO[str], lines: Sequence[str]) -> None:
    """Write lines and flush (under mpiexec stdout is a pipe, block-buffered otherwise)."""
    out.write("".join(line + "\n" for line in lines))
    out.flush()


# ---------------------------------------------------------------------------- command line

def add_sweep_arguments(parser: Any) -> None:
    """The nccl-tests flags every bench tool shares: -b -e -f -i -n -w -c and --json."""
    parser.add_argument("-b", "--minbytes", type=parse_size, default=parse_size("8"),
                        metavar="SIZE", help="smallest message, e.g. 8, 1K, 16M (default 8)")
    parser.add_argument("-e", "--maxbytes", type=parse_size, default=parse_size("256M"),
                        metavar="SIZE", help="largest message (default 256M)")
    step = parser.add_mutually_exclusive_group()
    step.add_argument("-f", "--stepfactor", type=int, metavar="F",
                      help="multiply the size by F each step (default 2)")
    step.add_argument("-i", "--stepbytes", type=parse_size, metavar="SIZE",
                      help="add SIZE bytes each step instead of multiplying")
    parser.add_argument("-n", "--iters", type=int, default=20, help="timed iterations (default 20)")
    parser.add_argument("-w", "--warmup_iters", type=int, default=5,
                        help="untimed iterations before timing, per size and variant (default 5)")
    parser.add_argument("-c", "--check", type=int, choices=(0, 1), default=1,
                        help="1: count wrong elements per size (default), 0: skip the check")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the rows and environment as JSON")


def sweep_options(args: Any) -> SweepOptions:
    """SweepOptions from arguments parsed with :func:`add_sweep_arguments`."""
    factor = None
    if args.stepbytes is None:
        factor = 2 if args.stepfactor is None else args.stepfactor
    sizes = size_steps(min_bytes=args.minbytes, max_bytes=args.maxbytes, factor=factor,
                       increment=args.stepbytes)
    return SweepOptions(sizes=sizes, iters=args.iters, warmup=args.warmup_iters,
                        check=bool(args.check))
