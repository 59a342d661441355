"""The benchmark harness: warm-up, timing, #wrong checks, algbw/busbw, repeats, rows.

It follows nccl-tests (``src/common.cu``): the harness owns everything around the
measured call, and each measured operation (an :class:`Op`, one module per collective in
:mod:`bench.ops`) supplies only five things — its name and row fields, bytes -> element
count, data initialisation (and the reference check) in :meth:`Op.setup`, its bus
bandwidth factor, and the call itself (:meth:`Sample.run`). Nothing here knows what an
all-reduce is. The table is :mod:`bench.table`'s, the JSON and environment
:mod:`bench.environment`'s.

An op offers *variants* (the table's column groups: MPI's own collective, the library's
algorithms, algorithm x compression). Per size, every variant is measured before the next
size, and with ``repeat`` the variants take turns that many times, so drift in the machine
hits all of them alike; a cell is the median of its turns.

Example::

    options = SweepOptions(sizes=size_steps(min_bytes=8, max_bytes=1 << 20, factor=2))
    rows = run(mpi_comm, op, options=options, command="my-bench -b 8 -e 1M",
               config={"op": op.name}, baseline="mpi")
"""
from __future__ import annotations

import functools
import hashlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from bench import environment, table
from bench.sizes import format_size, parse_size, size_steps

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = ["Op", "Row", "Sample", "SweepOptions", "Variant", "add_sweep_arguments", "bandwidth",
           "count_wrong", "held_against", "run", "sweep", "sweep_options", "time_per_iteration"]


# ---------------------------------------------------------------------------- the op contract

class Variant(Protocol):
    """One column group of the table (MPI's own collective, an algorithm, ...)."""

    @property
    def label(self) -> str:
        """Column header, short (``mpi``, ``ring``, ``ring+fp16``)."""

    def fields(self) -> Mapping[str, object]:
        """JSON fields naming the variant in a row (``{"algorithm": "ring"}``)."""


class Sample(Protocol):
    """An op's buffers for one message size, shared by all variants at that size.

    ``run`` must leave the same result however often it is called (an out-of-place call),
    so the output of the timed iterations can be checked.
    """

    @property
    def nbytes(self) -> int:
        """The message size as nccl-tests counts it for algbw."""

    def run(self, variant: Any) -> None:
        """The measured call, once."""

    def poison(self) -> None:
        """Fill the output with values no right result holds (NaN for floats), so a call
        that never writes it is counted wrong, not credited with an earlier call's result."""

    def wrong(self, variant: Any) -> int:
        """How many result elements on this rank differ from the reference (after ``run``)."""

    def result(self) -> np.ndarray:
        """This rank's output on the host, 1-D (compared across ranks for replicated ops)."""

    # Optional: ``synchronize()``, waiting for the device work ``run`` launched (GPU samples).


class Op(Protocol):
    """A measured collective: what nccl-tests' per-collective file supplies.

    ``replicated``: every rank ends with the same result, so the harness also holds each
    rank's result bits against rank 0's. Optional: ``predict(variant, nbytes)``, the cost
    model's seconds for a call (None where it has no price).
    """

    name: str
    replicated: bool

    def variants(self) -> Sequence[Variant]:
        """The column groups, measured in this order at every size."""

    def fields(self) -> Mapping[str, object]:
        """JSON fields common to every row (``{"type": "float32", "redop": "sum"}``)."""

    def count(self, nbytes: int) -> int:
        """Elements for a message of ``nbytes`` (0: the size is skipped)."""

    def bus_factor(self, nranks: int) -> float:
        """busbw / algbw: the share of the message each rank's link must carry
        (nccl-tests' doc/PERFORMANCE.md)."""

    def link_factor(self, ranks_per_node: Sequence[int]) -> float:
        """Bytes through the busiest node's link, each way, per byte of the message, at
        the link-bound optimum over nodes holding ``ranks_per_node`` ranks."""

    def setup(self, count: int) -> Sample:
        """Allocate and initialise the buffers for ``count`` elements."""


# ---------------------------------------------------------------------------- measuring

@dataclass(frozen=True)
class SweepOptions:
    """What to measure: message sizes in bytes, iterations, repeats, whether to check."""

    sizes: tuple[int, ...]
    iters: int = 20
    warmup: int = 5
    check: bool = True
    repeat: int = 1

    def __post_init__(self) -> None:
        if self.iters < 1 or self.warmup < 0 or self.repeat < 1:
            raise ValueError(f"need iters >= 1, warmup >= 0 and repeat >= 1, got "
                             f"{self.iters}, {self.warmup}, {self.repeat}")


@dataclass(frozen=True)
class Row:
    """One variant at one size: a cell group of the table, a row of the JSON.

    ``time_us`` is the median of ``runs_us`` (one time per repeat), and algbw and busbw
    follow from it. The leader adds what is held against it: the cost model's
    ``predicted_us`` and the ``inter_node_busbw`` (None: no price, or one node).
    """

    size: int
    count: int
    label: str
    fields: Mapping[str, object]
    time_us: float
    algbw: float
    busbw: float
    wrong: int | None  # None when not checked
    runs_us: tuple[float, ...] = ()
    predicted_us: float | None = None
    inter_node_busbw: float | None = None

    def as_json(self) -> dict[str, object]:
        """This row as JSON: nccl-tests' fields, then the repeats and what it is held against."""
        return {"size": self.size, "count": self.count, **self.fields,
                "time_us": self.time_us, "algbw": self.algbw, "busbw": self.busbw,
                "wrong": self.wrong, "time_us_runs": list(self.runs_us),
                "predicted_time_us": self.predicted_us,
                "inter_node_busbw": self.inter_node_busbw}


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


def alternating_medians(mpi_comm: MPI.Comm, calls: Mapping[str, Callable[[], object]], *,
                        rounds: int, budget: float, probe: str) -> dict[str, float]:
    """Seconds per call of each of ``calls``, timed in alternating rounds (drift on a loaded
    machine hits them alike): the median over rounds of time_per_iteration. The iterations
    are set so that one call of ``probe`` takes about ``budget`` seconds per round."""
    once = time_per_iteration(mpi_comm, calls[probe], iters=3, warmup=2)
    iters = max(3, min(50000, int(budget / max(once, 1e-7))))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(time_per_iteration(mpi_comm, call, iters=iters,
                                                  warmup=max(1, iters // 10)))
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def count_wrong(mpi_comm: MPI.Comm, sample: Sample, variant: Variant, *, replicated: bool) -> int:
    """#wrong: the most elements any rank got wrong, against the reference or against rank 0.

    Each rank checks its result with ``sample.wrong``; for a replicated op a digest of
    every rank's result bits is compared too, and where one differs from rank 0's, rank
    0's result is broadcast and the differing elements are counted as wrong too.
    """
    local = sample.wrong(variant)
    if replicated:
        result = sample.result()
        digest = hashlib.blake2b(result.view(np.uint8), digest_size=16).digest()
        digests = mpi_comm.allgather(digest)
        if any(other != digests[0] for other in digests):
            local = max(local, _differs_from_root(mpi_comm, result))
    return max(mpi_comm.allgather(local))


def _differs_from_root(mpi_comm: MPI.Comm, result: np.ndarray) -> int:
    """How many elements of ``result`` differ in their bits from rank 0's."""
    root = result.copy() if mpi_comm.rank == 0 else np.empty_like(result)
    mpi_comm.Bcast(root.view(np.uint8), root=0)
    mine = result.view(np.uint8).reshape(-1, result.itemsize)
    theirs = root.view(np.uint8).reshape(-1, result.itemsize)
    return int(np.count_nonzero((mine != theirs).any(axis=1)))


@dataclass
class _Turns:
    """One variant's seconds per call and #wrong over the repeats at one size."""

    seconds: list[float] = field(default_factory=list)
    wrong: list[int] = field(default_factory=list)

    def row(self, *, op: Op, sample: Sample, variant: Variant, count: int,
            bus_factor: float) -> Row:
        seconds = statistics.median(self.seconds)
        algbw, busbw = bandwidth(sample.nbytes, seconds, bus_factor)
        return Row(size=sample.nbytes, count=count, label=variant.label,
                   fields={**op.fields(), **variant.fields()}, time_us=seconds * 1e6,
                   algbw=algbw, busbw=busbw, wrong=max(self.wrong) if self.wrong else None,
                   runs_us=tuple(s * 1e6 for s in self.seconds))


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

    At each size the variants take ``options.repeat`` turns: warm-up, timed calls and
    the check each turn, the output poisoned first (every variant shares it); turn k
    starts k places further down the list, so no variant is always measured first or right
    after the same one. ``progress(done, total, what)`` is called before each turn.
    """
    variants = op.variants()
    counts = _counts(op, options.sizes)
    bus_factor = op.bus_factor(mpi_comm.size)
    total = len(counts) * len(variants) * options.repeat
    step = 0
    for count in counts:
        sample = op.setup(count)
        turns = [_Turns() for _ in variants]
        for turn in range(options.repeat):
            start = turn % len(variants)
            order = list(zip(variants, turns))
            for variant, measured in order[start:] + order[:start]:
                step += 1
                if progress is not None:
                    again = f" (turn {turn + 1}/{options.repeat})" if options.repeat > 1 else ""
                    progress(step, total, f"{format_size(sample.nbytes)} {variant.label}{again}")
                if options.check:
                    sample.poison()
                measured.seconds.append(time_per_iteration(
                    mpi_comm, functools.partial(sample.run, variant), iters=options.iters,
                    warmup=options.warmup, synchronize=getattr(sample, "synchronize", None)))
                if options.check:
                    measured.wrong.append(count_wrong(mpi_comm, sample, variant,
                                                      replicated=op.replicated))
        yield [measured.row(op=op, sample=sample, variant=variant, count=count,
                            bus_factor=bus_factor)
               for variant, measured in zip(variants, turns)]


def held_against(line: Sequence[Row], op: Op, *, ranks_per_node: Sequence[int]) -> list[Row]:
    """One size's rows (in variant order) with the model's prediction of each and, over
    several nodes, the inter-node busbw: algbw x the op's link factor."""
    predict = getattr(op, "predict", lambda variant, nbytes: None)
    link = op.link_factor(ranks_per_node) if len(ranks_per_node) > 1 else None
    held = []
    for row, variant in zip(line, op.variants()):
        seconds = predict(variant, row.size)
        held.append(replace(row, predicted_us=None if seconds is None else seconds * 1e6,
                            inter_node_busbw=None if link is None else row.algbw * link))
    return held


# ---------------------------------------------------------------------------- a whole run

def run(mpi_comm: MPI.Comm, op: Op, *, options: SweepOptions, command: str,
        config: Mapping[str, object], baseline: str | None = None,
        ranks_per_node: Sequence[int] | None = None, link_bytes_per_s: float | None = None,
        columns: str | None = None, json_path: str | None = None,
        env: Mapping[str, object] | None = None, out: IO[str] = sys.stdout,
        progress: table.Progress | None = None) -> list[Row]:
    """A whole benchmark: header, a table line per size as it is measured, summary, JSON.

    Every rank measures; rank 0 adds the predictions and inter-node busbw
    (``ranks_per_node``: the topology, default one node), prints the ``columns``
    (:func:`bench.table.layout`) to ``out``, reports ``progress`` and writes JSON.
    """
    env = dict(env or environment.environment(mpi_comm))
    nodes = tuple(ranks_per_node or (mpi_comm.size,))
    leader = mpi_comm.rank == 0
    if not op.variants():
        raise ValueError(f"nothing to measure: the {op.name} op offers no variants "
                         "(column groups)")
    if not any(op.count(nbytes) for nbytes in options.sizes):
        raise ValueError(f"nothing to measure: no size from {options.sizes[0]} to "
                         f"{options.sizes[-1]} bytes holds a whole {op.name} message")
    link = None
    if link_bytes_per_s is not None and len(nodes) > 1:
        link = table.LinkBound(link_bytes_per_s, op.link_factor(nodes))
    layout = table.layout(columns, sizes=options.sizes, baseline=baseline,
                          multi_node=len(nodes) > 1, link=link)
    labels = [variant.label for variant in op.variants()]
    if leader:
        _print(out, table.header_lines(command=command, env=env, config=config, layout=layout,
                                       nodes=nodes) + layout.header(labels))
    rows: list[Row] = []
    for line in sweep(mpi_comm, op, options=options, progress=progress if leader else None):
        if leader:
            line = held_against(line, op, ranks_per_node=nodes)
            _print(out, [layout.line(line)])
        rows += line
    if leader:
        if progress is not None:
            progress.close()
        _print(out, table.summary_lines(rows, labels=labels, baseline=baseline))
        if json_path is not None:
            environment.write_json(json_path, {
                "command": command, "environment": env, "config": dict(config),
                "baseline": baseline, "ranks_per_node": list(nodes),
                "link_bound": None if link is None else link.as_json(),
                "rows": [row.as_json() for row in rows]})
    return rows


def _print(out: IO[str], lines: Sequence[str]) -> None:
    """Write lines and flush (under mpiexec stdout is a pipe, block-buffered otherwise)."""
    out.write("".join(line + "\n" for line in lines))
    out.flush()


# ---------------------------------------------------------------------------- command line

def add_sweep_arguments(parser: Any) -> None:
    """The nccl-tests flags every bench tool shares (-b -e -f -i -n -w -c), --repeat, --json."""
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
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="at each size the variants take K turns, interleaved; each cell "
                             "is the median of its K times (default 1)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the rows and environment as JSON")


def sweep_options(args: Any) -> SweepOptions:
    """SweepOptions from arguments parsed with :func:`add_sweep_arguments`; ValueError for
    sizes that cannot be swept or a --json that cannot be written (before any rank starts:
    a message printed just before an MPI abort can be lost with the rank)."""
    if args.json is not None:
        environment.check_writable(args.json)
    factor = None
    if args.stepbytes is None:
        factor = 2 if args.stepfactor is None else args.stepfactor
    sizes = size_steps(min_bytes=args.minbytes, max_bytes=args.maxbytes, factor=factor,
                       increment=args.stepbytes)
    return SweepOptions(sizes=sizes, iters=args.iters, warmup=args.warmup_iters,
                        check=bool(args.check), repeat=args.repeat)
