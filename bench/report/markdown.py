"""report.md: the measured sweep, the winner per size, model vs measurement, at scale.

docs/report.md says how to read it.

Example::

    write_markdown(out_dir / "report.md", command=..., env=env, ...)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bench import table
from bench.ops.baseline import MPI_BASELINE
from bench.report.measure import ACCURACY_ALGORITHMS
from bench.report.model import DIRECT, Point, guesses, ranking
from bench.sizes import format_size
from collectives.files import write_atomically

__all__ = ["write_markdown"]


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}" if seconds >= 1e-4 else f"{seconds * 1e6:.1f}"


def write_markdown(path: Path, *, command: str, env: Mapping, accuracy_calibration, source: str,
                   rows, winners, points, file_points, scale: Sequence[dict],
                   plots: Sequence[str], elapsed: float) -> None:
    """The whole report, written atomically; sections without data (--accuracy-only) are
    left out."""
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
    write_atomically(path, "\n".join(out))


def _measured_sections(rows, winners) -> list[str]:
    """The sweep's busbw table with the ratios against mpi, and the winner per size."""
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
        out.append(f"| {format_size(size)} | " + " | ".join(values) + f" | {wrong} |")
    if MPI_BASELINE in labels:
        out += ["", "Against MPI's own all-reduce (`mpi`: MPI_Allreduce called through mpi4py on "
                "the same buffers, outside the library): average busbw, and busbw over mpi's "
                "at chosen sizes.", "", "```",
                *table.ratio_lines(rows, labels=labels, baseline=MPI_BASELINE), "```"]
    out += ["", "![busbw vs size](busbw.png)", ""]
    return out + _winner_section(winners, cell)


def _winner_section(winners, cell) -> list[str]:
    """Per size the fastest measured variant beside what auto ran and auto's own time."""
    out = ["## Winner per size", "",
           "Measured best: the fastest variant but `auto`, `auto+fp16` and `mpi`. Auto ran: "
           "the tuner's pick, or `direct` where the data rode with the agreement check's "
           "records (one exchange, no algorithm run); its time is the `auto` column's above.",
           "",
           "| size | measured best | time (us) | auto ran | auto's measured time (us) |",
           "|---:|---|---:|---|---:|"]
    for size, measured, ran in winners:
        auto = cell.get(("auto", size))
        out.append(f"| {format_size(size)} | {measured} | {cell[(measured, size)].time_us:,.1f} | "
                   f"{_ran(ran)} | {'' if auto is None else f'{auto.time_us:,.1f}'} |")
    return out + ["", "![winner per size](winners.png)", ""]


def _ran(algorithm: str) -> str:
    """What auto ran, in words."""
    return f"{DIRECT} (rides with the records)" if algorithm == DIRECT else algorithm


def _accuracy_section(points, calibration, file_points, file_source: str | None) -> list[str]:
    """Measured and predicted time per point, the error, and the calibration they share."""
    from bench.calibrate import BUDGET, RUNS, describe

    out = ["## Model vs measurement", "",
           f"Each measured point is the median of {RUNS} timed runs ({BUDGET:g} s of calls each), timed "
           "in one round-robin with the calibration's micro-benchmarks, next to those of its "
           "size: the model's constants and the calls it predicts come from the same minutes "
           "of this machine. Predicted: the plan's simulated time on that calibration plus its "
           "per-call cost. Error = (predicted - measured) / measured, for "
           f"{', '.join(ACCURACY_ALGORITHMS)} at {_sizes(points)}. Timed again: the same call, "
           "timed a second time in each of those runs, moments after the first, "
           "(again - measured) / measured: "
           "no model can be held closer than two measurements of one call agree."]
    header = "| algorithm | size | measured (us) | predicted (us) | error | timed again |"
    if file_points:
        out[-1] += (f" The last two columns predict the same calls from the tuning file "
                    f"({file_source}), measured at another time: their error includes how far "
                    "this machine's speed has moved since.")
        header += " predicted from the tuning file (us) | error |"
    out += ["", header, "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if file_points else "")]
    from_file = guesses(file_points)
    for label, series in points.items():
        for point in series:
            line = (f"| {label} | {format_size(point.size)} | {_us(point.measured)} | "
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
    out += ["", "![measured vs predicted](accuracy.png)", "", _calibration_range(calibration),
            "", "```", describe(calibration), "```", ""]
    return out


def _sizes(points) -> str:
    """The sizes the points were measured at, in words."""
    sizes = sorted({point.size for series in points.values() for point in series})
    return ", ".join(map(format_size, sizes))


def _calibration_range(calibration) -> str:
    """The line above the calibration: what it covers, --max-bytes or not."""
    exchanges = [row[0] for row in calibration.by_size]
    return (f"Calibration (taken with the points; a whole calibration, the kind the "
            f"tuning file keeps, so its micro-benchmarks go to {format_size(max(exchanges))} and "
            f"native's table to {format_size(calibration.native[-1][0])} whatever "
            "`--max-bytes`):")


def _worst(points, value) -> tuple[str, Point]:
    """The (algorithm, point) whose value(point) is largest in size."""
    return max(((label, point) for label, series in points.items() for point in series),
               key=lambda lp: abs(value(lp[1])))


def _summary(points) -> str:
    """The worst error and how many points are within +-25%."""
    label, worst = _worst(points, lambda point: point.error)
    errors = [point.error for series in points.values() for point in series]
    within = sum(abs(e) <= 0.25 for e in errors)
    return (f"Worst case: {label} at {format_size(worst.size)}, {100 * worst.error:+.0f}%. "
            f"Within +-25%: {within} of {len(errors)} points.")


def _repeatability(points) -> str:
    """How far the same calls timed twice differed, at worst."""
    label, worst = _worst(points, lambda point: point.repeat_difference)
    return (f"The same calls timed twice differed by up to {100 * abs(worst.repeat_difference):.0f}% "
            f"({label} at {format_size(worst.size)}).")


def _scale_section(scale: Sequence[dict]) -> list[str]:
    """Per cluster shape: predicted busbw per size, crossovers, critical paths."""
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
            out.append(f"| {format_size(size)} | "
                       + " | ".join(f"{table[n][size]['busbw']:.1f}" for n in names)
                       + f" | {ranking(table, size)[0]} |")
        out += ["", "Crossovers (ranking, fastest first):", ""]
        for change in result["crossovers"] or [{"between": None}]:
            if change["between"] is None:
                out.append("- none: the ranking holds at every size")
                continue
            lo, hi = change["between"]
            out.append(f"- between {format_size(lo)} and {format_size(hi)}: "
                       f"{' > '.join(change['before'])} becomes {' > '.join(change['after'])}")
        largest = result["sizes"][-1]
        out += ["", f"Critical path at {format_size(largest)}:", ""]
        out += [f"- {name}: {table[name][largest]['critical_path']}" for name in names]
        out.append("")
    out += ["![at scale](at_scale.png)", ""]
    return out
