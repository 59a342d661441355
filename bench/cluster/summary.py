"""Benchmark runs on a lab held against the link bound: a markdown table and a bar plot.

The bound: an all-reduce of n bytes over q nodes must move, through each node's link, every
byte of the node's sum that other nodes own out (reduce-scatter) and every other node's
part in (all-gather): 2(q-1)/q x n bytes each way, whatever the algorithm and however many
ranks a node holds. At R bytes/s each way the time is at least that over R. As busbw over
p ranks (algbw x 2(p-1)/p, algbw = n / time): R x q(p-1) / (p(q-1)). TCP over Ethernet
delivers at most 1448/1514 of R, the second bound row.

Usage: python -m bench.cluster.summary RUN.json [RUN.json ...] --link 1gbit [--png PATH]
(RUN.json: ``collectives-bench --nodes q --ppn k --link 1gbit --json RUN.json``)

Example::

    python -m bench.cluster.summary 2x2.json 4x2.json --link 1gbit --png busbw.png
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.arguments import link_rate
from bench.environment import check_writable
from bench.harness import format_size
from collectives.files import read_regular, write_atomically

from .rate import TCP_GOODPUT, LinkRate

__all__ = ["Run", "bound_busbw", "main", "markdown", "plot"]

RUN_MAX_BYTES = 64 << 20  # a collectives-bench JSON: a row per size and column group


def bound_busbw(rate: LinkRate, *, nodes: int, ranks: int) -> float:
    """The link-bound busbw in GB/s of ``ranks`` ranks on ``nodes`` nodes (see the module)."""
    return rate.bytes_per_second * nodes * (ranks - 1) / (ranks * (nodes - 1)) / 1e9


@dataclass(frozen=True)
class Run:
    """One collectives-bench JSON: its shape and busbw (GB/s) by (size, algorithm)."""

    nodes: int
    ranks: int
    busbw: dict[tuple[int, str], float]

    @classmethod
    def load(cls, path: Path) -> "Run":
        """The run in the regular file at `path`; ValueError naming what it lacks (the keys
        read here, of their types; a finite busbw), OSError as open raises it."""
        try:
            document = json.loads(read_regular(Path(path), RUN_MAX_BYTES))
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON ({error})") from None
        environment = _get(document, "environment", dict, "", "an object")
        hosts = _get(environment, "hosts", int, "'environment' has ", "an integer")
        ranks = _get(environment, "nranks", int, "'environment' has ", "an integer")
        if hosts < 2:
            raise ValueError("ran on one host; the link bound needs 2 nodes or more")
        if ranks < hosts:
            raise ValueError(f"{ranks} ranks on {hosts} hosts")
        rows = _get(document, "rows", list, "", "a list")
        if not rows:
            raise ValueError("no rows: the run measured nothing")
        busbw: dict[tuple[int, str], float] = {}
        for i, row in enumerate(rows):
            size = _get(row, "size", int, f"row {i} has ", "an integer")
            algorithm = _get(row, "algorithm", str, f"row {i} has ", "a string")
            value = _get(row, "busbw", (int, float), f"row {i} has ", "a number")
            if size < 1:
                raise ValueError(f"row {i}: a size of {size} bytes")
            try:
                value = float(value)
            except OverflowError:  # (a JSON integer beyond float's range)
                value = math.inf
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"row {i}: busbw {value} GB/s is not a finite number >= 0")
            if (size, algorithm) in busbw:  # (--compression, --tensors: one column each)
                raise ValueError(f"row {i}: {algorithm} at {format_size(size)} again; the "
                                 "summary takes runs of one column group per algorithm")
            busbw[size, algorithm] = value
        return cls(nodes=hosts, ranks=ranks, busbw=busbw)

    @property
    def shape(self) -> str:
        """``4x2`` (nodes x ranks per node), or ``5 on 2`` for uneven nodes."""
        if self.ranks % self.nodes == 0:
            return f"{self.nodes}x{self.ranks // self.nodes}"
        return f"{self.ranks} on {self.nodes}"

    @property
    def sizes(self) -> list[int]:
        return sorted({size for size, _ in self.busbw})

    @property
    def algorithms(self) -> list[str]:
        return list(dict.fromkeys(algorithm for _, algorithm in self.busbw))


def _get(document: Any, key: str, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    """``document[key]``; ValueError unless it is there and of `kind` (a bool is no number)."""
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}no {key!r} ({what})")
    return value


def _columns(runs: Sequence[Run]) -> list[tuple[Run, int]]:
    return [(run, size) for run in runs for size in run.sizes]


def markdown(runs: Sequence[Run], rate: LinkRate) -> str:
    """busbw (GB/s) per algorithm and run x size, each with its fraction of the link bound."""
    columns = _columns(runs)
    algorithms = list(dict.fromkeys(a for run in runs for a in run.algorithms))
    lines = ["| busbw GB/s (of bound) | " + " | ".join(
                 f"{run.shape} {format_size(size)}" for run, size in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for algorithm in algorithms:
        cells = []
        for run, size in columns:
            value = run.busbw.get((size, algorithm))
            bound = bound_busbw(rate, nodes=run.nodes, ranks=run.ranks)
            cells.append("-" if value is None else f"{value:.3f} ({value / bound:.2f})")
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")
    for label, factor in (("link bound", 1.0), ("link bound x TCP goodput", TCP_GOODPUT)):
        lines.append(f"| *{label}* | " + " | ".join(
            f"*{factor * bound_busbw(rate, nodes=run.nodes, ranks=run.ranks):.3f}*"
            for run, _ in columns) + " |")
    return "\n".join(lines)


def plot(runs: Sequence[Run], rate: LinkRate, path: Path) -> None:
    """Bars of busbw per algorithm for each run x size; a line at each group's link bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(runs)
    algorithms = list(dict.fromkeys(a for run in runs for a in run.algorithms))
    width = 0.8 / len(algorithms)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for i, algorithm in enumerate(algorithms):
        ax.bar([c + (i - (len(algorithms) - 1) / 2) * width for c in range(len(columns))],
               [run.busbw.get((size, algorithm), 0) for run, size in columns], width,
               label=algorithm)
    for c, (run, _) in enumerate(columns):
        bound = bound_busbw(rate, nodes=run.nodes, ranks=run.ranks)
        ax.hlines(bound, c - 0.45, c + 0.45, colors="k", linestyles="--",
                  label="link bound" if c == 0 else None)
    top = max(max(*run.busbw.values(), bound_busbw(rate, nodes=run.nodes, ranks=run.ranks))
              for run in runs)
    ax.set_ylim(0, 1.3 * top)  # room for the legend above the bars
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{run.shape}\n{format_size(size)}" for run, size in columns])
    ax.set_ylabel("busbw (GB/s)")
    ax.set_title(f"All-reduce across lab nodes, links {rate} each way")
    ax.legend(fontsize=8, ncol=4, loc="upper center")
    fig.tight_layout()
    # (without a format, "x" was written as x.png; through a symlink, into its target)
    write_atomically(Path(path), lambda handle: fig.savefig(handle, dpi=110, format="png"))
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table (and draw the plot); every problem is a parser error, exit 2."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster.summary",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN.json")
    parser.add_argument("--link", type=link_rate, required=True,
                        help="the lab's link rate, e.g. 1gbit")
    parser.add_argument("--png", type=Path, default=None, help="also draw the bars here")
    args = parser.parse_args(argv)
    rate = args.link
    if rate is None:
        parser.error("--link must be a rate: unshaped links have no bound")
    if args.png is not None:
        try:
            check_writable(str(args.png))
        except ValueError as error:
            parser.error(f"--png: {error}")
    runs = []
    for path in args.runs:
        try:
            runs.append(Run.load(path))
        except (OSError, ValueError, RecursionError) as error:
            parser.error(f"{path}: {getattr(error, 'strerror', None) or error}")
    print(markdown(runs, rate))
    if args.png is not None:
        plot(runs, rate, args.png)


if __name__ == "__main__":
    main()
