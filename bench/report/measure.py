"""What the report measures: the sweep of every algorithm, and the model-vs-measurement points.

Both run the one all-reduce op (:mod:`bench.ops.allreduce`): float32 sum, every result
checked against the closed-form reference.

Example::

    rows = measure_sweep(mpi_comm, comm, options=options, progress=progress)
    calibration, points = measure_accuracy(mpi_comm, comm, (64 << 10,), quick=True,
                                           progress=print)
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench import harness
from bench.ops.allreduce import AllReduce, AllReduceVariant

__all__ = ["ACCURACY_ALGORITHMS", "ACCURACY_SIZES", "Measured",
           "measure_accuracy", "measure_sweep", "sweep_op"]

ACCURACY_ALGORITHMS = ("ring", "hierarchical", "torus2d", "halving_doubling")
ACCURACY_SIZES = tuple(64 << (10 + 2 * i) for i in range(6))  # 64 KiB .. 64 MiB by x4
_DTYPE = np.dtype(np.float32)

# (algorithm, bytes, seconds per call, seconds of the same call timed again)
Measured = tuple[str, int, float, float]


def _compressions(comm: Any) -> list[str | None]:
    """None, and "fp16" when this build's allreduce accepts it."""
    try:
        comm.allreduce(np.ones(4, np.float32), algorithm="ring", compression="fp16")
    except ValueError:
        return [None]
    return [None, "fp16"]


def sweep_op(comm: Any, mpi_comm: Any, algorithms: Sequence[str]) -> AllReduce:
    """The all-reduce op of the sweep: mpi, then every algorithm x compression."""
    return AllReduce(comm, mpi_comm, dtype=_DTYPE, redop="sum", algorithms=algorithms,
                     compressions=_compressions(comm))


def measure_sweep(mpi_comm: Any, op: AllReduce, *, options: harness.SweepOptions,
                  ranks_per_node: Sequence[int],
                  progress: Callable[[int, int, str], None] | None) -> list[harness.Row]:
    """Every variant of ``op`` at every size, each row with its prediction (rank 0)."""
    rows: list[harness.Row] = []
    for line in harness.sweep(mpi_comm, op, options=options, progress=progress):
        rows += harness.held_against(line, op, ranks_per_node=ranks_per_node)
    return rows


def measure_accuracy(mpi_comm: Any, comm: Any, sizes: Sequence[int], *, quick: bool,
                     progress: Callable[[str], None]) -> tuple[Any, list[Measured]]:
    """(calibration, [(algorithm, bytes, seconds per call, seconds timed again)]):
    ACCURACY_ALGORITHMS at ``sizes``, timed in one round-robin with the calibration's
    micro-benchmarks, each point next to those of its size and the median of its timed runs;
    every call is timed twice in each run (all four, then all four again). This host's speed
    drifts by up to 3x from one minute (or one job) to the next; so the model is held against
    calls timed at the moments its constants were, and the twice-timed calls show how much
    two measurements of one call differ here."""
    from bench.calibrate import calibrate_alongside

    op = AllReduce(comm, mpi_comm, dtype=_DTYPE, redop="sum", algorithms=ACCURACY_ALGORITHMS,
                   mpi_baseline=False)
    samples = {n: op.setup(op.count(n)) for n in sizes}
    alongside = {n: [functools.partial(sample.run, AllReduceVariant(name))
                     for name in ACCURACY_ALGORITHMS] * 2 for n, sample in samples.items()}
    calibration, seconds = calibrate_alongside(mpi_comm, comm, alongside, quick=quick,
                                               progress=progress)
    k = len(ACCURACY_ALGORITHMS)
    return calibration, [(name, n, first, again) for n in sizes
                         for name, first, again in zip(ACCURACY_ALGORITHMS, seconds[n][:k],
                                                       seconds[n][k:])]
