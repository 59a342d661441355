"""collectives-report: measure every algorithm, hold the cost model against it, predict at scale.

1. Measures ring, hierarchical, torus2d and halving_doubling from 64 KiB to 64 MiB, each
   point the median of nine timed runs, in one round-robin with the calibration's
   micro-benchmarks (bench/calibrate.py): the simulator's predictions on that calibration
   are held against calls timed at the same moments, and, when the tuning file has an
   entry for this np, on the tuning file's too. Each call is timed twice in every run, so
   the report also shows how far two measurements of one call differ on this host. Without
   an entry, this calibration is written to the tuning file.
2. Measures all algorithms x message sizes x compression (none, fp16) with the benchmark
   harness (bench/harness.py), a progress bar on stderr.
3. Predicts busbw on named cluster shapes (or those of --cluster FILE) with the sizes where
   the ranking of algorithms changes.
4. Writes DIR/report.md, DIR/results.json (nccl-tests-like rows plus predictions) and PNGs.
docs/report.md explains how to read it.

Example::

    collectives-report --quick --out OUT                 # starts 2 ranks itself
    collectives-report --np 4 --out OUT --cluster my-clusters.json
    collectives-report --accuracy-only --np 4 --out OUT  # model vs measurement only
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from bench import harness, launch
from bench.allreduce_perf import element_codes, reference, value_table

__all__ = ["ACCURACY_ALGORITHMS", "Scale", "default_clusters", "load_clusters", "main"]

_MODULE = "bench.report"
ACCURACY_ALGORITHMS = ("ring", "hierarchical", "torus2d", "halving_doubling")
ACCURACY_RANGE = (64 << 10, 64 << 20)
ACCURACY_SIZES = tuple(64 << (10 + 2 * i) for i in range(6))  # 64 KiB .. 64 MiB by x4


# ---------------------------------------------------------------------------- cluster shapes

@dataclass(frozen=True)
class Scale:
    """A named cluster shape for the at-scale section."""

    name: str
    cluster: Any  # collectives.costmodel.ClusterModel


def default_clusters() -> list[Scale]:
    """16 nodes x 8 GPUs (NVLink 450 GB/s, IB 400 Gb/s); 1024 ranks on a 32x32 torus; 4096 ranks."""
    return load_clusters({"clusters": [
        {"name": "128 GPUs: 16 nodes x 8, NVLink 450 GB/s + IB 400 Gb/s", "nodes": 16,
         "ranks_per_node": 8, "intra": {"alpha_us": 3, "gbytes_per_s": 450},
         "inter": {"alpha_us": 6, "gbytes_per_s": 50}, "reduce_gbytes_per_s": 1000},
        {"name": "1024 ranks: 32x32 torus, 100 GB/s links", "nodes": 32, "ranks_per_node": 32,
         "grid": [32, 32], "torus_links": True, "intra": {"alpha_us": 2, "gbytes_per_s": 100},
         "inter": {"alpha_us": 2, "gbytes_per_s": 100}, "reduce_gbytes_per_s": 1000},
        {"name": "4096 GPUs: 512 nodes x 8, NVLink 450 GB/s + IB 400 Gb/s", "nodes": 512,
         "ranks_per_node": 8, "intra": {"alpha_us": 3, "gbytes_per_s": 450},
         "inter": {"alpha_us": 6, "gbytes_per_s": 50}, "reduce_gbytes_per_s": 1000},
    ]})


def load_clusters(document: Mapping[str, Any]) -> list[Scale]:
    """Cluster shapes from a --cluster document (see docs/report.md for the format)."""
    from collectives.costmodel import ClusterModel, LinkModel

    shapes = []
    for entry in document.get("clusters", ()):
        try:
            links = {key: LinkModel.from_bandwidth(alpha_us=float(entry[key]["alpha_us"]),
                                                   gbytes_per_s=float(entry[key]["gbytes_per_s"]),
                                                   zero_copy=bool(entry[key].get("zero_copy", False)))
                     for key in ("intra", "inter")}
            grid = tuple(entry["grid"]) if entry.get("grid") else None
            cluster = ClusterModel.uniform(
                nodes=int(entry["nodes"]), ranks_per_node=int(entry["ranks_per_node"]), grid=grid,
                gamma=1 / (float(entry["reduce_gbytes_per_s"]) * 1e9), name=str(entry["name"]),
                torus_links=bool(entry.get("torus_links", False)), **links)
        except KeyError as missing:
            raise ValueError(f"cluster {entry.get('name', entry)!r} lacks {missing}; needs name, "
                             "nodes, ranks_per_node, intra/inter {alpha_us, gbytes_per_s}, "
                             "reduce_gbytes_per_s (grid, torus_links optional)") from None
        shapes.append(Scale(cluster.name, cluster))
    if not shapes:
        raise ValueError("the cluster file lists no clusters: {\"clusters\": [{...}, ...]}")
    return shapes


# ---------------------------------------------------------------------------- the measured op

@dataclass(frozen=True)
class Variant:
    """One column group: an algorithm, uncompressed or with 16-bit wire compression."""

    algorithm: str
    compression: str | None = None

    @property
    def label(self) -> str:
        return self.algorithm + (f"+{self.compression}" if self.compression else "")

    def fields(self) -> Mapping[str, object]:
        return {"algorithm": self.algorithm, "compression": self.compression or "none"}


class _Sample:
    """Deterministic input, output and reference (bench.allreduce_perf's data) for one size."""

    def __init__(self, comm: Any, count: int) -> None:
        table = value_table(comm.size, integer=False)
        self._comm = comm
        self._codes = element_codes(count)
        self._x = np.take(table[comm.rank].astype(np.float32), self._codes)
        self._out = np.empty_like(self._x)
        self._checks = {wire: reference(table, "sum", eps=float(ml_dtypes.finfo(wire).eps))
                        for wire in (np.float32, np.float16)}

    @property
    def nbytes(self) -> int:
        return self._x.nbytes

    def run(self, variant: Variant) -> None:
        self._comm.allreduce(self._x, algorithm=variant.algorithm,
                             compression=variant.compression, out=self._out)

    def wrong(self, variant: Variant) -> int:
        """Elements off the reference by more than the wire type's rounding allows."""
        expected, tolerance = self._checks[np.float16 if variant.compression else np.float32]
        error = np.abs(self._out.astype(np.float64) - expected[self._codes])
        return int(np.count_nonzero(~(error <= tolerance[self._codes])))

    def result(self) -> np.ndarray:
        return self._out


class _AllReduce:
    name = "allreduce"

    def __init__(self, comm: Any, variants: Sequence[Variant]) -> None:
        self._comm = comm
        self._variants = tuple(variants)

    def variants(self) -> Sequence[Variant]:
        return self._variants

    def fields(self) -> Mapping[str, object]:
        return {"type": "float32", "redop": "sum"}

    def count(self, nbytes: int) -> int:
        return nbytes // 4

    def bus_factor(self, nranks: int) -> float:
        return 2 * (nranks - 1) / nranks

    def setup(self, count: int) -> _Sample:
        return _Sample(self._comm, count)


def _compressions(comm: Any) -> list[str | None]:
    """None, and "fp16" when this build's allreduce accepts it."""
    try:
        comm.allreduce(np.ones(4, np.float32), algorithm="ring", compression="fp16")
    except ValueError:
        return [None]
    return [None, "fp16"]


# ---------------------------------------------------------------------------- predictions

def predict_rows(rows: Sequence[harness.Row], model: Any, tuner: Any) -> list[float | None]:
    """Predicted seconds per measured row (None for what the model does not price)."""
    from collectives.algorithms import PLANNERS
    from collectives.simulator import simulate

    cache: dict[tuple[str, str, int], float] = {}
    predicted = []
    for row in rows:
        algorithm, compression = row.fields["algorithm"], row.fields["compression"]
        if algorithm == "auto":
            algorithm = tuner.choose(row.size)
        key = (algorithm, compression, row.size)
        if key not in cache:
            if algorithm == "native":
                cache[key] = model.native_time(row.size) if compression == "none" else None
            elif algorithm in PLANNERS["allreduce"]:
                wire = 2 if compression != "none" else 4
                plan = simulate(algorithm, model, row.count, itemsize=4, wire_itemsize=wire)
                cache[key] = model.call_time(row.size) + plan.time
            else:
                cache[key] = None
        predicted.append(cache[key])
    return predicted


def at_scale(shapes: Sequence[Scale], sizes: Sequence[int], *, progress) -> list[dict]:
    """Predicted busbw of every plan-based algorithm on each cluster shape, per size."""
    from collectives.algorithms import PLANNERS
    from collectives.simulator import simulate

    results = []
    total = len(shapes) * len(sizes) * len(PLANNERS["allreduce"])
    step = 0
    for shape in shapes:
        cluster = shape.cluster
        table: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in PLANNERS["allreduce"]}
        started = time.perf_counter()
        for nbytes in sizes:
            for name in PLANNERS["allreduce"]:
                step += 1
                progress(step, total, f"at scale: {cluster.size} ranks {harness.format_size(nbytes)} {name}")
                p = simulate(name, cluster, nbytes // 4)
                table[name][nbytes] = {"time_us": p.time * 1e6, "busbw": p.busbw(),
                                       "critical_path": p.critical_path.summary(),
                                       "simulated_ranks": p.simulated_ranks}
        results.append({"name": shape.name, "ranks": cluster.size,
                        "nodes": len(cluster.topology.nodes),
                        "grid": list(cluster.topology.grid_shape()),
                        "seconds_to_simulate": time.perf_counter() - started,
                        "sizes": list(sizes), "algorithms": table,
                        "crossovers": crossovers(table, sizes)})
    return results


def ranking(table: Mapping[str, Mapping[int, Mapping[str, float]]], nbytes: int) -> list[str]:
    """Algorithms from fastest to slowest at `nbytes`."""
    return sorted(table, key=lambda name: (table[name][nbytes]["time_us"], name))


def crossovers(table: Mapping[str, Mapping[int, Mapping[str, float]]],
               sizes: Sequence[int]) -> list[dict]:
    """The sizes at which the ranking changes, with the ranking before and after."""
    changes = []
    for before, after in zip(sizes, sizes[1:]):
        old, new = ranking(table, before), ranking(table, after)
        if old != new:
            changes.append({"between": [before, after], "before": old, "after": new})
    return changes


# ---------------------------------------------------------------------------- plots

_STYLE = {"native": "k", "ring": "tab:blue", "hierarchical": "tab:orange", "torus2d": "tab:green",
          "halving_doubling": "tab:red", "auto": "tab:purple"}


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (the ranks have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(label: str) -> str:
    return _STYLE.get(label.split("+")[0], "tab:gray")


def _size_axis(ax, sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = [s for i, s in enumerate(sizes) if i % max(1, len(sizes) // 8) == 0]
    ax.set_xticks(ticks)
    ax.set_xticklabels([harness.format_size(s).replace(" ", "") for s in ticks], rotation=30)
    ax.grid(True, which="major", alpha=0.3)


def plot_busbw(rows, path: Path, *, np_: int) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label in dict.fromkeys(row.label for row in rows):
        mine = [row for row in rows if row.label == label]
        ax.plot([r.size for r in mine], [r.busbw for r in mine], marker="o", ms=3,
                color=_color(label), ls="--" if "+" in label else "-", label=label)
    _size_axis(ax, sorted({row.size for row in rows}))
    ax.set_yscale("log")
    ax.set_xlabel("message size")
    ax.set_ylabel("busbw (GB/s, log)")
    ax.set_title(f"Measured bus bandwidth, np={np_} (dashed: fp16 on the wire)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_winners(winners: Sequence[tuple[int, str, str | None]], path: Path, *, np_: int) -> None:
    """Per size: the measured winner (top strip) and the model's pick (bottom strip)."""
    from matplotlib.patches import Patch

    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(9, 2.8))
    labels = sorted({w for _, m, p in winners for w in (m, p) if w})
    for i, (size, measured, predicted) in enumerate(winners):
        for y, label in ((1, measured), (0, predicted)):
            if label:
                ax.add_patch(plt.Rectangle((i, y + 0.1), 1, 0.8, color=_color(label),
                                           hatch="//" if "+" in label else None, alpha=0.85))
    ax.set_xlim(0, len(winners))
    ax.set_ylim(0, 2)
    ax.set_yticks([0.5, 1.5])
    ax.set_yticklabels(["model's pick", "measured best"])
    ax.set_xticks([i + 0.5 for i in range(len(winners))])
    ax.set_xticklabels([harness.format_size(s).replace(" ", "") for s, _, _ in winners],
                       rotation=45, fontsize=7)
    ax.legend(handles=[Patch(color=_color(l), label=l, hatch="//" if "+" in l else None)
                       for l in labels], fontsize=7, ncol=min(len(labels), 6),
              loc="upper center", bbox_to_anchor=(0.5, 1.45))
    ax.set_title(f"Fastest algorithm per size, np={np_}", pad=38)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Point(NamedTuple):
    """One model-vs-measurement point: seconds per call, measured, predicted, and the same
    call timed again in the same runs (how far this host lets one measurement be trusted)."""

    size: int
    measured: float
    predicted: float
    again: float

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured

    @property
    def repeat_difference(self) -> float:
        return (self.again - self.measured) / self.measured


def plot_accuracy(points: Mapping[str, list[Point]], path: Path, *, np_: int) -> None:
    """Measured (dots) vs predicted (lines) time per algorithm, and the relative error beside
    how far the same calls timed twice differed (grey)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    spread: dict[int, float] = {}
    for label, series in points.items():
        xs = [point.size for point in series]
        top.plot(xs, [point.measured * 1e6 for point in series], "o", color=_color(label), ms=4)
        top.plot(xs, [point.predicted * 1e6 for point in series], "-", color=_color(label), label=label)
        bottom.plot(xs, [100 * point.error for point in series], "o-", color=_color(label), ms=3)
        for point in series:
            spread[point.size] = max(spread.get(point.size, 0.0), 100 * abs(point.repeat_difference))
    top.set_yscale("log")
    top.set_ylabel("time per call (us)")
    top.set_title(f"Measured (dots) vs predicted (lines), np={np_}")
    top.legend(fontsize=8)
    sizes = sorted(spread)
    bottom.axhspan(-25, 25, color="tab:green", alpha=0.12)
    bottom.fill_between(sizes, [-spread[s] for s in sizes], [spread[s] for s in sizes],
                        color="0.5", alpha=0.3, label="same call timed twice: difference")
    bottom.axhline(0, color="k", lw=0.8)
    bottom.set_ylabel("error (%)")
    bottom.legend(fontsize=8, loc="lower right")
    for ax in (top, bottom):
        _size_axis(ax, sizes)
    bottom.set_xlabel("message size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scale(results: Sequence[dict], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.6), squeeze=False)
    for ax, result in zip(axes[0], results):
        sizes = result["sizes"]
        for i, (name, by_size) in enumerate(result["algorithms"].items()):
            # Earlier lines wider, so equal predictions (hierarchical, torus2d) both show.
            ax.plot(sizes, [by_size[s]["busbw"] for s in sizes], marker="o", ms=3,
                    color=_color(name), label=name, lw=4.5 - i, alpha=0.85)
        for change in result["crossovers"]:
            lo, hi = change["between"]
            ax.axvline((lo * hi) ** 0.5, color="gray", ls=":", lw=1)
        _size_axis(ax, sizes)
        ax.set_title(result["name"], fontsize=9)
        ax.set_xlabel("message size")
        ax.set_ylabel("predicted busbw (GB/s)")
        ax.legend(fontsize=7)
    fig.suptitle("At scale (simulated; dotted lines: ranking changes)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- the report

def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}" if seconds >= 1e-4 else f"{seconds * 1e6:.1f}"


def measure_accuracy(mpi_comm, comm: Any, sizes: Sequence[int], *, quick: bool,
                     progress) -> tuple[Any, list[tuple[str, int, float, float]]]:
    """(calibration, [(algorithm, bytes, seconds per call, seconds timed again)]):
    ACCURACY_ALGORITHMS at `sizes`, timed in one round-robin with the calibration's
    micro-benchmarks, each point next to those of its size and the median of its timed runs;
    every call is timed twice in each run (all four, then all four again). This host's speed
    drifts by up to 3x from one minute (or one job) to the next; so the model is held against
    calls timed at the moments its constants were, and the twice-timed calls show how much
    two measurements of one call differ here."""
    from bench.calibrate import calibrate_alongside

    samples = {n: _Sample(comm, n // 4) for n in sizes}
    alongside = {n: [functools.partial(sample.run, Variant(name)) for name in ACCURACY_ALGORITHMS] * 2
                 for n, sample in samples.items()}
    calibration, seconds = calibrate_alongside(mpi_comm, comm, alongside, quick=quick,
                                               progress=progress)
    k = len(ACCURACY_ALGORITHMS)
    return calibration, [(name, n, first, again) for n in sizes
                         for name, first, again in zip(ACCURACY_ALGORITHMS, seconds[n][:k], seconds[n][k:])]


def accuracy(measured: Sequence[tuple[str, int, float, float]], model: Any) -> dict[str, list[Point]]:
    """The points per algorithm: each call predicted as its plan's simulated time on `model`
    plus the calibrated per-call cost."""
    from collectives.simulator import simulate

    points: dict[str, list[Point]] = {}
    for name, nbytes, seconds, again in measured:
        guess = model.call_time(nbytes) + simulate(name, model, nbytes // 4).time
        points.setdefault(name, []).append(Point(nbytes, seconds, guess, again))
    return points


def write_markdown(path: Path, *, command: str, env: Mapping, accuracy_calibration, source: str,
                   rows, predicted, winners, points, file_points, scale: Sequence[dict],
                   plots: Sequence[str], elapsed: float) -> None:
    out = [f"# All-reduce report: np={env['nranks']} on {env['hostname']}", "",
           f"`{command}` — {env['date']}, {env['mpi_library']}, {env['cpus']} CPUs, "
           f"{elapsed:.0f} s. How to read it: [docs/report.md](../report.md) "
           "(in the repository).", ""]
    if rows:
        out += _measured_sections(rows, winners)
    out += _accuracy_section(points, accuracy_calibration, file_points, source)
    if scale:
        out += _scale_section(scale)
    out += ["Files: " + ", ".join(["results.json", *plots]), ""]
    path.write_text("\n".join(out))


def _measured_sections(rows, winners) -> list[str]:
    labels = list(dict.fromkeys(row.label for row in rows))
    sizes = sorted({row.size for row in rows})
    cell = {(row.label, row.size): row for row in rows}
    out = ["## Measured", "",
           "Bus bandwidth in GB/s (busbw = algbw x 2(p-1)/p); the best per size in bold. "
           "`+fp16`: 16-bit values on the wire.", "",
           "| size | " + " | ".join(labels) + " | #wrong |",
           "|---:|" + "---:|" * len(labels) + "---:|"]
    for size in sizes:
        best = max((cell[(l, size)].busbw for l in labels if (l, size) in cell), default=0)
        values = []
        for label in labels:
            row = cell.get((label, size))
            text = "" if row is None else f"{row.busbw:.3g}"
            values.append(f"**{text}**" if row is not None and row.busbw == best and best > 0 else text)
        wrong = sum(cell[(l, size)].wrong or 0 for l in labels if (l, size) in cell)
        out.append(f"| {harness.format_size(size)} | " + " | ".join(values) + f" | {wrong} |")
    out += ["", "![busbw vs size](busbw.png)", "", "## Winner per size", "",
            "| size | measured best | time (us) | model's pick (auto) | its measured time (us) |",
            "|---:|---|---:|---|---:|"]
    for size, measured, pick in winners:
        best = cell[(measured, size)]
        picked = cell.get((pick, size)) if pick else None
        out.append(f"| {harness.format_size(size)} | {measured} | {best.time_us:,.1f} | {pick} | "
                   f"{'' if picked is None else f'{picked.time_us:,.1f}'} |")
    out += ["", "![winner per size](winners.png)", ""]
    return out


def _accuracy_section(points, calibration, file_points, file_source: str | None) -> list[str]:
    from bench.calibrate import BUDGET, RUNS, describe

    out = ["## Model vs measurement", "",
           f"Each measured point is the median of {RUNS} timed runs ({BUDGET:g} s of calls each), timed "
           "in one round-robin with the calibration's micro-benchmarks, next to those of its "
           "size: the model's constants and the calls it predicts come from the same minutes "
           "of this machine. Predicted: the plan's simulated time on that calibration plus its "
           "per-call cost. Error = (predicted - measured) / measured, for "
           f"{', '.join(ACCURACY_ALGORITHMS)} from {harness.format_size(ACCURACY_RANGE[0])} to "
           f"{harness.format_size(ACCURACY_RANGE[1])}. Timed again: the same call, timed a second "
           "time in each of those runs, moments after the first, (again - measured) / measured: "
           "no model can be held closer than two measurements of one call agree."]
    header = "| algorithm | size | measured (us) | predicted (us) | error | timed again |"
    if file_points:
        out[-1] += (f" The last two columns predict the same calls from the tuning file "
                    f"({file_source}), measured at another time: their error includes how far "
                    "this machine's speed has moved since.")
        header += " predicted from the tuning file (us) | error |"
    out += ["", header, "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if file_points else "")]
    from_file = _guesses(file_points)
    for label, series in points.items():
        for point in series:
            line = (f"| {label} | {harness.format_size(point.size)} | {_us(point.measured)} | "
                    f"{_us(point.predicted)} | {100 * point.error:+.0f}% | "
                    f"{100 * point.repeat_difference:+.0f}% |")
            other = from_file.get((label, point.size))
            if other is not None:
                line += f" {_us(other)} | {100 * (other - point.measured) / point.measured:+.0f}% |"
            out.append(line)
    if points:
        out += ["", f"**{_summary(points)}** {_repeatability(points)}"]
    if file_points:
        out += ["", f"From the tuning file: {_summary(file_points)}"]
    out += ["", "![measured vs predicted](accuracy.png)", "", "Calibration (taken with the points):",
            "", "```", describe(calibration), "```", ""]
    return out


def _guesses(points) -> dict[tuple[str, int], float]:
    """{(algorithm, size): predicted seconds} of accuracy points (none for None)."""
    return {(label, point.size): point.predicted for label, series in (points or {}).items()
            for point in series}


def _worst(points, value) -> tuple[str, Point]:
    """The (algorithm, point) whose value(point) is largest in size."""
    return max(((label, point) for label, series in points.items() for point in series),
               key=lambda lp: abs(value(lp[1])))


def _summary(points) -> str:
    """The worst error and how many points are within +-25%."""
    label, worst = _worst(points, lambda point: point.error)
    errors = [point.error for series in points.values() for point in series]
    within = sum(abs(e) <= 0.25 for e in errors)
    return (f"Worst case: {label} at {harness.format_size(worst.size)}, {100 * worst.error:+.0f}%. "
            f"Within +-25%: {within} of {len(errors)} points.")


def _repeatability(points) -> str:
    """How far the same calls timed twice differed, at worst."""
    label, worst = _worst(points, lambda point: point.repeat_difference)
    return (f"The same calls timed twice differed by up to {100 * abs(worst.repeat_difference):.0f}% "
            f"({label} at {harness.format_size(worst.size)}).")


def _scale_section(scale: Sequence[dict]) -> list[str]:
    out = ["## At scale (simulated)", "",
           "The same plans, simulated on virtual clusters (plan time only: no per-call host "
           "cost). busbw in GB/s per algorithm and size; a ranking change between two sizes "
           "is a crossover.", ""]
    for result in scale:
        table = result["algorithms"]
        names = list(table)
        out += [f"### {result['name']}", "",
                f"{result['ranks']} ranks, {result['nodes']} nodes, torus2d grid "
                f"{result['grid'][0]}x{result['grid'][1]}; simulated in "
                f"{result['seconds_to_simulate']:.1f} s.", "",
                "| size | " + " | ".join(names) + " | fastest |", "|---:|" + "---:|" * len(names) + "---|"]
        for size in result["sizes"]:
            out.append(f"| {harness.format_size(size)} | "
                       + " | ".join(f"{table[n][size]['busbw']:.1f}" for n in names)
                       + f" | {ranking(table, size)[0]} |")
        out += ["", "Crossovers (ranking, fastest first):", ""]
        for change in result["crossovers"] or [{"between": None}]:
            if change["between"] is None:
                out.append("- none: the ranking holds at every size")
                continue
            lo, hi = change["between"]
            out.append(f"- between {harness.format_size(lo)} and {harness.format_size(hi)}: "
                       f"{' > '.join(change['before'])} becomes {' > '.join(change['after'])}")
        largest = result["sizes"][-1]
        out += ["", f"Critical path at {harness.format_size(largest)}:", ""]
        out += [f"- {name}: {table[name][largest]['critical_path']}" for name in names]
        out.append("")
    out += ["![at scale](at_scale.png)", ""]
    return out


# ---------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collectives-report",
        description="Measure every all-reduce algorithm, compare with the cost model, predict "
                    "at scale; writes report.md, results.json and PNG plots.")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument("--quick", action="store_true",
                        help="fewer sizes and iterations (about 2 minutes on a small host)")
    parser.add_argument("--cluster", metavar="FILE",
                        help="JSON with the cluster shapes to predict (default: built-in shapes)")
    parser.add_argument("--max-bytes", type=harness.parse_size, default=None, metavar="SIZE",
                        help="largest measured message (default 256M, 16M with --quick; the "
                             "model-vs-measurement points go to 64M unless this is smaller)")
    parser.add_argument("--accuracy-only", action="store_true",
                        help="only the model-vs-measurement section (no sweep, no at-scale)")
    launch.add_launch_argument(parser)
    launch.add_lab_arguments(parser)
    return parser


def _accuracy_sizes(args) -> tuple[int, ...]:
    """ACCURACY_SIZES up to --max-bytes (or the smallest, if that is below them all)."""
    top = args.max_bytes or ACCURACY_SIZES[-1]
    return tuple(s for s in ACCURACY_SIZES if s <= top) or ACCURACY_SIZES[:1]


def _sizes(args) -> tuple[tuple[int, ...], tuple[int, ...], harness.SweepOptions]:
    """(measured sizes, at-scale sizes, sweep options) for the mode."""
    top = args.max_bytes or ((16 << 20) if args.quick else (256 << 20))
    factor = 8 if args.quick else 4
    measured = harness.size_steps(min_bytes=8, max_bytes=top, factor=factor)
    measured += (top,) if measured[-1] != top else ()
    scale = harness.size_steps(min_bytes=64 << 10, max_bytes=256 << 20, factor=64 if args.quick else 4)
    options = harness.SweepOptions(sizes=measured, iters=5 if args.quick else 10,
                                   warmup=1 if args.quick else 3)
    return measured, scale, options


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        shapes = (load_clusters(json.loads(Path(args.cluster).read_text())) if args.cluster
                  else default_clusters())
    except (OSError, ValueError) as error:
        parser.error(f"--cluster {args.cluster}: {error}")
    launch.ensure_launched(module=_MODULE, argv=argv, nranks=args.np,
                           lab=launch.lab_request(parser, args))

    from mpi4py import MPI

    import collectives
    from collectives.costmodel import write_calibration

    mpi_comm = MPI.COMM_WORLD
    leader = mpi_comm.rank == 0
    started = time.perf_counter()
    rows: list[harness.Row] = []
    with harness.abort_on_error(mpi_comm):
        if mpi_comm.size < 2:
            raise ValueError("collectives-report needs at least 2 ranks (--np 2 or more)")
        out_dir = Path(args.out)
        if leader:
            out_dir.mkdir(parents=True, exist_ok=True)
        redraw = sys.stderr.isatty() or os.environ.get(launch.PROGRESS_TTY) == "1"
        progress = harness.Progress(stream=sys.stderr, redraw=redraw)
        env = harness.environment(mpi_comm, collectives=collectives.__version__)
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
            comm = collectives.init(mpi_comm=mpi_comm)  # auto reads the new entry
        measured_sizes, scale_sizes, options = _sizes(args)
        variants = [Variant(name, compression) for compression in _compressions(comm)
                    for name in collectives.ALGORITHMS]
        if not args.accuracy_only:
            for line in harness.sweep(mpi_comm, _AllReduce(comm, variants), options=options,
                                      progress=progress if leader else None):
                rows += line
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


def _steps(stage: str):
    """A progress callback writing each step of `stage` as a line on stderr."""
    def step(what: str) -> None:
        print(f"{stage}: {what}", file=sys.stderr, flush=True)

    return step


def _tuning_entry(size: int):
    """(calibration, source) of this np from the tuning file, or (None, None)."""
    from collectives.costmodel import read_tuning

    entry = read_tuning().get(size)
    return (entry, f"tuning file, np={size}") if entry else (None, None)


def _write(out_dir: Path, *, args, argv, env, calibration, source, accuracy_calibration, comm,
           rows, measured, options, scale, elapsed: float) -> None:
    from collectives.tuner import Tuner

    model = calibration.cluster(comm.topology, name="this machine")
    tuner = Tuner(model, source=source)
    predicted = predict_rows(rows, model, tuner)
    sizes = sorted({row.size for row in rows})
    winners = []
    for size in sizes:
        here = [row for row in rows if row.size == size and row.label != "auto"]
        best = min(here, key=lambda row: row.time_us)
        winners.append((size, best.label, tuner.choose(size)))
    points = accuracy(measured, accuracy_calibration.cluster(comm.topology, name="this machine"))
    file_points = None if calibration is accuracy_calibration else accuracy(measured, model)
    from_file = _guesses(file_points)
    plots = ["busbw.png", "winners.png", "accuracy.png", "at_scale.png"] if rows else ["accuracy.png"]
    plot_accuracy(points, out_dir / "accuracy.png", np_=comm.size)
    if rows:
        plot_busbw(rows, out_dir / "busbw.png", np_=comm.size)
        plot_winners(winners, out_dir / "winners.png", np_=comm.size)
    if scale:
        plot_scale(scale, out_dir / "at_scale.png")
    command = shlex.join(["collectives-report", *argv])
    document = {
        "command": command, "environment": env,
        "config": {"collective": "allreduce", "dtype": "float32", "op": "sum",
                   "iters": options.iters, "warmup": options.warmup, "check": 1,
                   "quick": args.quick},
        "calibration": {"source": source, **calibration.as_json()},
        **({} if file_points is None else {"accuracy_calibration": accuracy_calibration.as_json()}),
        "rows": [{**row.as_json(), "predicted_time_us": None if guess is None else guess * 1e6,
                  "error": None if not guess else (guess - row.time_us * 1e-6) / (row.time_us * 1e-6)}
                 for row, guess in zip(rows, predicted)],
        "winners": [{"size": s, "measured": m, "auto_pick": p} for s, m, p in winners],
        "accuracy": [{"algorithm": name, "size": point.size, "time_us": point.measured * 1e6,
                      "predicted_time_us": point.predicted * 1e6, "error": point.error,
                      "again_time_us": point.again * 1e6,
                      "repeat_difference": point.repeat_difference,
                      **_tuning_file_prediction(from_file.get((name, point.size)), point.measured)}
                     for name, series in points.items() for point in series],
        "at_scale": scale,
    }
    harness.write_json(str(out_dir / "results.json"), document)
    write_markdown(out_dir / "report.md", command=command, env=env,
                   accuracy_calibration=accuracy_calibration, source=source, rows=rows,
                   predicted=predicted, winners=winners, points=points, file_points=file_points,
                   scale=scale, plots=plots, elapsed=elapsed)


def _tuning_file_prediction(guess: float | None, seconds: float) -> dict:
    """The tuning file's prediction of one accuracy point, as results.json fields."""
    return {} if guess is None else {"tuning_file_predicted_time_us": guess * 1e6,
                                     "tuning_file_error": (guess - seconds) / seconds}


if __name__ == "__main__":
    sys.exit(main())
