"""The cost model's time for an all-reduce call, beside its measurement.

Prices come from the communicator's tuner (the tuning file of ``collectives-bench
--calibrate``, else the default model): ``native`` from its calibrated times, a plan-based
algorithm as its plans' simulated time plus the per-call cost (``Tuner.predict``), ``auto``
as the algorithm the tuner picks. A compressed call is simulated with 2-byte elements on
the wire, plus the codec's passes and the scale's agreement (``Tuner.predict_compressed``);
``compression="auto"`` as what the tuner decides for it. MPI's own all-reduce outside the
library has no price.

Example::

    prices = AllReducePrices(comm.tuner, itemsize=4)
    prices.seconds("ring", None, 1 << 20)       # 0.00036
"""
from __future__ import annotations

import functools
from typing import Any

__all__ = ["AllReducePrices"]



class AllReducePrices:
    """Predicted seconds per (algorithm, compression, bytes), cached."""

    def __init__(self, tuner: Any, *, itemsize: int) -> None:
        self._tuner = tuner
        self._itemsize = itemsize

    @functools.cache
    def seconds(self, algorithm: str, compression: str | None, nbytes: int) -> float | None:
        """The model's time of one call; None for what it does not price."""
        from collectives.algorithms import PLANNERS

        if compression == "auto":  # the library decides the algorithm and the wire
            wire = self._tuner.compression(nbytes, algorithm)
            if wire.between_nodes:
                return self._tuner.predict_between_nodes(nbytes, wire.algorithm)
            algorithm, compression = wire.algorithm, wire.compression
        if algorithm == "auto":
            algorithm = self._tuner.choose(nbytes)  # what auto runs: the library decides
        if compression is None:
            return self._candidates(nbytes).get(algorithm)
        if algorithm not in PLANNERS["allreduce"]:
            return None
        return self._tuner.predict_compressed(nbytes, algorithm)

    @functools.cache
    def _candidates(self, nbytes: int) -> dict[str, float]:
        """Every candidate's uncompressed time, as the library's tuner prices it (in its
        own element size: the model prices bytes)."""
        return self._tuner.predict(nbytes)
