"""The benchmark's text output: header, one aligned line per size, summary, progress.

A table line is the size and count, then a group of cells per variant. Which cells is the
*layout* (``--columns``): ``latency`` (time, prediction, time against the baseline,
#wrong) for sweeps below 1 MiB, ``bandwidth`` (time, prediction, busbw, #wrong) above,
``wide`` for every cell, or a list such as ``time,algbw,busbw,wrong`` (nccl-tests' own).
Over several nodes the default layouts add the inter-node busbw (``node``), and with a
known link rate a ``bound`` column gives the link-bound time of each size.

Example::

    layout = table.layout(None, sizes=(8, 64), baseline="mpi", multi_node=False, link=None)
    print("\\n".join(layout.header(["mpi", "ring"])))
    print(layout.line(rows))
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from bench.sizes import format_size

if TYPE_CHECKING:
    from bench.harness import Row

__all__ = ["CELLS", "LATENCY_BELOW", "PRESETS", "PROBE_SIZES", "Layout", "LinkBound", "Progress",
           "header_lines", "layout", "parse_columns", "ratio_lines", "summary_lines"]

# Sizes at which the summary compares each variant with the baseline.
PROBE_SIZES = (1 << 20, 16 << 20, 64 << 20)
# Sweeps whose largest size is below this get the latency layout by default.
LATENCY_BELOW = 1 << 20


@dataclass(frozen=True)
class LinkBound:
    """A node's link rate each way, and the op's bytes through it per byte at the optimum."""

    bytes_per_s: float
    link_factor: float

    def seconds(self, nbytes: int) -> float:
        """The link-bound optimum: the busiest node link's bytes over its rate."""
        return self.link_factor * nbytes / self.bytes_per_s

    def as_json(self) -> dict[str, float]:
        """The rate, and the bound as inter-node busbw (GB/s): the link's own rate."""
        return {"bytes_per_s": self.bytes_per_s, "link_factor": self.link_factor,
                "inter_node_busbw": self.bytes_per_s / 1e9}


@dataclass(frozen=True)
class Cell:
    """One column of a variant's group: its key for --columns, header, width and text."""

    key: str
    name: str
    unit: str
    width: int
    text: Callable[["Row", "Row | None"], str]  # (row, the baseline's row at its size)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fitted(text: str, width: int) -> str:
    """`text` with a space before it in a cell of `width`: a decimal too wide in fewer
    significant digits, anything else (a count) after a space, the line growing (cells ran
    together: 81412.7 beside 1200000.0 read as one number, the sixty-ninth review)."""
    if len(text) < width:
        return text
    if "." in text:
        value = float(text)
        for digits in range(width - 2, 0, -1):
            short = f"{value:.{digits}g}"
            if len(short) < width:
                return short
    return " " + text


def _ratio(row: "Row", base: "Row | None") -> str:
    return "-" if base is None or base.time_us <= 0 else f"{row.time_us / base.time_us:.2f}"


CELLS = {cell.key: cell for cell in (
    Cell("time", "time", "(us)", 10, lambda row, base: f"{row.time_us:.1f}"),
    Cell("pred", "pred", "(us)", 9, lambda row, base: _number(row.predicted_us, 1)),
    Cell("ratio", "ratio", "(xbase)", 8, _ratio),
    Cell("algbw", "algbw", "(GB/s)", 8, lambda row, base: f"{row.algbw:.2f}"),
    Cell("busbw", "busbw", "(GB/s)", 8, lambda row, base: f"{row.busbw:.2f}"),
    Cell("node", "node bw", "(GB/s)", 8, lambda row, base: _number(row.inter_node_busbw, 3)),
    Cell("wrong", "#wrong", "", 7, lambda row, base: "N/A" if row.wrong is None else str(row.wrong)),
)}
PRESETS = {
    "latency": ("time", "pred", "ratio", "wrong"),
    "bandwidth": ("time", "pred", "busbw", "node", "wrong"),
    "wide": ("time", "pred", "ratio", "algbw", "busbw", "node", "wrong"),
}
_SIZE_W, _COUNT_W, _BOUND_W = 12, 12, 11


def parse_columns(text: str) -> str:
    """``text`` when it names a preset or a list of cells; ValueError otherwise."""
    _keys(text)
    return text


def _keys(text: str) -> tuple[str, ...]:
    """The cells a preset or a comma-separated list names."""
    keys = PRESETS.get(text) or tuple(key for key in text.split(",") if key)
    unknown = [key for key in keys if key not in CELLS]
    if unknown or not keys:
        raise ValueError(f"unknown columns {', '.join(unknown) or repr(text)}; give "
                         f"{', '.join(PRESETS)} or a list of {', '.join(CELLS)}")
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"columns named twice: {', '.join(repeated)}")
    return keys


def layout(columns: str | None, *, sizes: Sequence[int], baseline: str | None,
           multi_node: bool, link: LinkBound | None) -> "Layout":
    """The cells to print: ``columns`` as given, else the latency or bandwidth preset by the
    largest size. A preset shows ``node`` only over several nodes and ``ratio`` only with a
    baseline; a list shows what it names."""
    preset = columns or ("latency" if max(sizes) < LATENCY_BELOW else "bandwidth")
    keys = _keys(preset)
    if preset in PRESETS:
        keys = tuple(key for key in keys if (key != "node" or multi_node)
                     and (key != "ratio" or baseline is not None))
    return Layout(tuple(CELLS[key] for key in keys), baseline=baseline, link=link)


@dataclass(frozen=True)
class Layout:
    """The chosen cells of each variant's group, the baseline, and the link bound if known."""

    cells: tuple[Cell, ...]
    baseline: str | None
    link: LinkBound | None

    @property
    def _group_width(self) -> int:
        return sum(cell.width for cell in self.cells)

    def _lead(self, size: str, count: str, bound: str) -> str:
        lead = f"{size:>{_SIZE_W}}{count:>{_COUNT_W}}"
        return lead + (f"{bound:>{_BOUND_W}}" if self.link is not None else "")

    def header(self, labels: Sequence[str]) -> list[str]:
        """Three lines: variant names over their groups, cell names, units."""
        lead = self._lead("", "", "")
        groups = "#" + lead[1:] + "".join(f" |{label:^{self._group_width}}" for label in labels)
        names = "#" + self._lead("size", "count", "bound")[1:] + "".join(
            " |" + "".join(f"{cell.name:>{cell.width}}" for cell in self.cells) for _ in labels)
        units = "#" + self._lead("(B)", "(elements)", "(us)")[1:] + "".join(
            " |" + "".join(f"{cell.unit:>{cell.width}}" for cell in self.cells) for _ in labels)
        return [groups.rstrip(), names, units.rstrip()]

    def line(self, rows: Sequence["Row"]) -> str:
        """One size: its lead cells, then each variant's cells."""
        first = rows[0]
        bound = "" if self.link is None else f"{self.link.seconds(first.size) * 1e6:.1f}"
        base = next((row for row in rows if row.label == self.baseline), None)
        groups = ["".join(f"{_fitted(cell.text(row, base), cell.width):>{cell.width}}"
                          for cell in self.cells) for row in rows]
        return " |".join([self._lead(str(first.size), str(first.count), bound), *groups])


def header_lines(*, command: str, env: Mapping[str, Any], config: Mapping[str, object],
                 layout: Layout, nodes: Sequence[int]) -> list[str]:
    """The lines before the table: the command, ranks and MPI library, the op's settings,
    what the ratios are taken against, and the nodes and their link when several."""
    hosts = env["hosts"]
    lines = [
        f"# {command}",
        f"# np {env['nranks']} on {hosts} host{'s' if hosts != 1 else ''}"
        f"  {env['mpi_library']}  mpi4py {env['mpi4py']}  numpy {env['numpy']}",
        "# " + "  ".join(f"{key} {value}" for key, value in config.items()),
    ]
    if layout.baseline is not None:
        lines.append(f"# baseline {layout.baseline}: ratio = time / {layout.baseline}'s time at "
                     "that size; pred = the cost model's time (collectives-bench --calibrate)")
    if len(nodes) > 1:
        line = (f"# {len(nodes)} nodes, ranks per node {','.join(map(str, nodes))}: node bw = "
                "bytes through each node's link at the optimum / time")
        if layout.link is not None:
            line += (f"; link {layout.link.bytes_per_s / 1e9:.3f} GB/s each way, the bound on "
                     "node bw; bound = the time at it")
        lines.append(line)
    return lines


def summary_lines(rows: Sequence["Row"], *, labels: Sequence[str],
                  baseline: str | None = None) -> list[str]:
    """The lines after the table: :func:`ratio_lines`, then the #wrong total if checked."""
    lines = ratio_lines(rows, labels=labels, baseline=baseline)
    checked = [row.wrong for row in rows if row.wrong is not None]
    if checked:
        total = sum(checked)
        lines.append(f"# #wrong total: {total} {'OK' if total == 0 else 'FAILED'}")
    return lines


def ratio_lines(rows: Sequence["Row"], *, labels: Sequence[str],
                baseline: str | None = None) -> list[str]:
    """A line per variant: average busbw and, against ``baseline``, busbw ratios at 1M, 16M,
    64M; where the sweep measured none of those, at its smallest and largest sizes."""
    by_label = {label: {row.size: row for row in rows if row.label == label} for label in labels}
    sizes = sorted({row.size for row in rows})
    probes = [size for size in PROBE_SIZES if size in sizes] or sorted({sizes[0], sizes[-1]})
    width = max(len(label) for label in labels)
    lines = []
    for label in labels:
        measured = by_label[label].values()
        average = sum(row.busbw for row in measured) / max(len(measured), 1)
        line = f"# {label:<{width}}  avg busbw {average:8.2f} GB/s"
        if baseline is not None and label != baseline and baseline in by_label:
            ratios = ", ".join(
                f"{format_size(size)} {_busbw_ratio(by_label[label][size], by_label[baseline][size])}"
                for size in probes)
            line += f"   {label}/{baseline} busbw at {ratios}"
        lines.append(line)
    return lines


def _busbw_ratio(row: "Row", base: "Row") -> str:
    """``row``'s busbw over ``base``'s, as ``1.02x`` (``n/a`` when the base is 0)."""
    return f"{row.busbw / base.busbw:.2f}x" if base.busbw > 0 else "n/a"


class Progress:
    """Sweep progress on a stream (stderr), ``[12/24] 4 MiB ring``, at most one step per
    ``interval`` seconds (and always the last).

    Each line a rank writes wakes the launcher that forwards it; on a machine with as many
    cores as ranks, a line per measurement slowed small all-reduces several times over, so
    steps in between are left out. With ``redraw`` (a terminal) each step ends in a carriage
    return instead of a newline, so the next step, or the next table line on stdout, writes
    over it.
    """

    def __init__(self, *, stream: IO[str], redraw: bool, interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._redraw = redraw
        self._interval = interval
        self._clock = clock
        self._last: float | None = None

    def __call__(self, done: int, total: int, what: str) -> None:
        if total < 2:  # a single measurement is no sweep
            return
        now = self._clock()
        if done < total and self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        text = f"[{done}/{total}] {what}"
        self._stream.write(f"\r\033[K{text}\r" if self._redraw else text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Erase the last step (redraw mode)."""
        if self._redraw:
            self._stream.write("\r\033[K")
            self._stream.flush()
