"""The cost model held against the measurements, and its predictions at scale.

- :func:`accuracy`: each measured point (bench.report.measure) predicted as its plan's
  simulated time plus the calibrated per-call cost;
- :func:`winners`: the fastest measured algorithm per size beside what auto ran there
  (:func:`auto_runs`);
- :func:`at_scale`: every plan simulated on cluster shapes, and the sizes where the
  ranking of the algorithms changes (:func:`crossovers`).

Example::

    points = accuracy(measured, calibration.cluster(comm.topology, name="this machine"))
    scale = at_scale(default_clusters(), (64 << 10, 4 << 20), progress=lambda *a: None)
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from bench.ops.baseline import MPI_BASELINE
from bench.report.clusters import Scale
from bench.report.measure import Measured
from bench.sizes import format_size

__all__ = ["DIRECT", "Point", "accuracy", "at_scale", "auto_runs", "crossovers", "guesses",
           "ranking", "winners"]

DIRECT = "direct"  # what auto runs when its data rides with the agreement records


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


def accuracy(measured: Sequence[Measured], model: Any) -> dict[str, list[Point]]:
    """The points per algorithm: each call predicted as its plan's simulated time on `model`
    plus the calibrated per-call cost."""
    from collectives.simulator import simulate

    points: dict[str, list[Point]] = {}
    for name, nbytes, seconds, again in measured:
        guess = model.call_time(nbytes) + simulate(name, model, nbytes // 4).time
        points.setdefault(name, []).append(Point(nbytes, seconds, guess, again))
    return points


def guesses(points) -> dict[tuple[str, int], float]:
    """{(algorithm, size): predicted seconds} of accuracy points (none for None)."""
    return {(label, point.size): point.predicted for label, series in (points or {}).items()
            for point in series}


def auto_runs(comm: Any) -> Callable[[int], str]:
    """What ``algorithm="auto"`` runs for an uncompressed all-reduce of n bytes on ``comm``:
    the reproducible path where reductions are deterministic by default
    (COLLECTIVES_DETERMINISTIC), DIRECT where its data rides with the agreement check's
    records, else the tuner's pick."""
    from collectives.calls.riding import rides

    def runs(nbytes: int) -> str:
        if comm.settings.deterministic:
            return "deterministic"
        return DIRECT if comm.settings.check and rides(nbytes, comm.size) else \
            comm.tuner.choose(nbytes)

    return runs


def winners(rows: Sequence[Any], auto: Callable[[int], str]) -> list[tuple[int, str, str]]:
    """Per size: (size, the fastest measured variant, what auto ran: ``auto(size)``);
    MPI's own all-reduce and auto itself (+fp16 too) are not candidates."""
    result = []
    for size in sorted({row.size for row in rows}):
        here = [row for row in rows if row.size == size
                and row.fields["algorithm"] not in ("auto", MPI_BASELINE)]
        best = min(here, key=lambda row: row.time_us)
        result.append((size, best.label, auto(size)))
    return result


def at_scale(shapes: Sequence[Scale], sizes: Sequence[int], *,
             progress: Callable[[int, int, str], None]) -> list[dict]:
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
                progress(step, total, f"at scale: {cluster.size} ranks {format_size(nbytes)} {name}")
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

